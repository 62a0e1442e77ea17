"""Programmatic dependent launch (PDL) for the decode step's kernels, on sm_90 and later.

A one-token decode step of an 8B model is about 260 short kernels, and between two of them the GPU
idles while the next grid is launched and its programs are placed on the SMs (about a microsecond each
time, 0.3 ms of a 3.3 ms step on the H200). A kernel launched with PDL is placed while its predecessor
still runs: each of its programs first waits for the predecessor to finish and its memory to be visible
(`griddepcontrol.wait`), then lets its own successor launch (`griddepcontrol.launch_dependents`).

The rule every kernel launched with PDL keeps: nothing an earlier kernel of the stream writes, or reads,
is touched before `wait_for_predecessor`. Loads of memory no kernel writes during a step (weights,
scales) may come first, so they are in flight while the predecessor finishes. Waiting on the predecessor
is enough for every earlier kernel: the predecessor itself finished only after its own wait returned.
A kernel launched without PDL (PyTorch's, cuBLAS's) starts after its predecessor completes, as ever.

Placed early, a GEMV's programs also ask the L2 for the first part of their weights (`prefetch_rows`)
while the kernels before them run: behind attention, which reads little, the o projection's weights are
then mostly in L2 when its wait returns. Each launch prefetches at most half the L2
(`prefetch_bytes_per_row`), so a large weight's prefetch does not evict itself.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.weight_formats import compiles_ptx


@functools.cache
def enabled(device: torch.device) -> bool:
    """PDL launches: a compiled kernel (not Triton's interpreter) on a GPU of sm_90 or later."""
    return compiles_ptx(device) and torch.cuda.get_device_capability(device) >= (9, 0)


@functools.cache
def _prefetch_budget(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).L2_cache_size // 2


def prefetch_bytes_per_row(weight: torch.Tensor, row_bytes: int, row_stride_bytes: int) -> int:
    """How many leading bytes of each of a launch's weight rows (a program's part of a row is
    `row_bytes` long, rows `row_stride_bytes` apart) its programs prefetch: all of them if the weight
    fits half the L2, else the same leading share of every row; a multiple of 16 * PREFETCH_CHUNKS, and
    0 without PDL or where a piece would not start 16-byte aligned (as the bulk prefetch needs)."""
    device = weight.device
    aligned = all(v % 16 == 0 for v in (weight.data_ptr(), row_bytes, row_stride_bytes))
    if not enabled(device) or not aligned or row_bytes <= 0:
        return 0
    weight_bytes = weight.numel() * weight.element_size()
    share = min(row_bytes, row_bytes * _prefetch_budget(device) // max(weight_bytes, 1))
    unit = 16 * PREFETCH_CHUNKS.value
    return share // unit * unit


PREFETCH_CHUNKS = tl.constexpr(8)  # each prefetched row in this many pieces, spread over the threads

# $1: an address, $2: a byte count (a multiple of 16, from a 16-byte aligned address; nothing if 0)
_PREFETCH_L2 = tl.constexpr("""
{
.reg .pred some;
setp.ne.u32 some, $2, 0;
@some cp.async.bulk.prefetch.L2.global [$1], $2;
mov.u32 $0, 0;
}
""")


def launch_args(device: torch.device) -> dict[str, bool]:
    """A launch's PDL arguments: the kernel's `PDL` constexpr and Triton's `launch_pdl` option."""
    on = enabled(device)
    return {"PDL": on, "launch_pdl": on}


@triton.jit
def wait_for_predecessor(PDL: tl.constexpr):
    """Under PDL: wait until the previous kernel of the stream has finished and its writes are visible,
    then let the next kernel's programs be placed (they wait in turn). Without PDL: nothing."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def prefetch_rows(row_ptrs, row_mask, nbytes, PDL: tl.constexpr):
    """Under PDL, before the wait: ask the L2 for the first `nbytes` (`prefetch_bytes_per_row`) at
    each of the [ROWS] byte pointers `row_ptrs` where `row_mask` holds, in PREFETCH_CHUNKS pieces."""
    if PDL:
        piece = nbytes // PREFETCH_CHUNKS
        starts = row_ptrs.to(tl.int64)[:, None] + (tl.arange(0, PREFETCH_CHUNKS) * piece)[None, :]
        sizes = tl.where(row_mask[:, None], piece, 0) + tl.zeros([1, PREFETCH_CHUNKS], tl.int32)
        tl.inline_asm_elementwise(
            _PREFETCH_L2, "=r,l,r", [starts, sizes], dtype=tl.int32, is_pure=False, pack=1
        )
