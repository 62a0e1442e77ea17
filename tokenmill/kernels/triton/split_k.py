"""Split-K for the quantized GEMMs: how many programs share one output tile's reduction, and the
deterministic sum of their partial results.

A decode batch (a few rows) gives a GEMM only out/BLOCK_N output tiles, often fewer than the GPU has SMs,
while each tile streams the whole K extent of its weight columns. Splitting K lets more SMs pull weight
bytes at once. The partials go to an fp32 buffer summed in a fixed order (no atomics), so a greedy
decode reads the same logits whatever the scheduling.
"""

from __future__ import annotations

import functools

import torch
import triton

MAX_SPLITS = 16
MIN_BLOCKS_PER_SPLIT = 4  # K blocks each split still reduces, so its loop amortises the tile set-up


@functools.cache
def num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def widest_covering_tile(n: int, narrowest: int, widest: int, sms: int) -> int:
    """The widest power-of-two tile of `n` outputs in [narrowest, widest] whose tiles still cover every
    SM (a GEMV fills the GPU with narrow tiles rather than by splitting K)."""
    block_n = widest
    while block_n > narrowest and triton.cdiv(n, block_n) < sms:
        block_n //= 2
    return block_n


def choose_split_k(tiles: int, k: int, block_k: int, sms: int) -> int:
    """Programs per output tile: enough to give every SM work, each still reducing enough K blocks."""
    if tiles >= sms:
        return 1
    return max(1, min(triton.cdiv(sms, tiles), k // (MIN_BLOCKS_PER_SPLIT * block_k), MAX_SPLITS))


def plan(k: int, block_k: int, tiles: int, device: torch.device, split_k: int | None) -> tuple[int, int]:
    """(splits, K extent per split, a multiple of block_k); `split_k` None: chosen for the device."""
    wanted = split_k or choose_split_k(tiles, k, block_k, num_sms(device))
    per_split = triton.cdiv(triton.cdiv(k, wanted), block_k) * block_k
    return triton.cdiv(k, per_split), per_split


def output(x: torch.Tensor, n: int, splits: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Where the kernel writes: [m, n] in `dtype` (x's by default), or fp32 [splits, m, n] partials."""
    if splits == 1:
        return x.new_empty(x.shape[0], n, dtype=dtype or x.dtype)
    return x.new_empty(splits, x.shape[0], n, dtype=torch.float32)


def reduce(out: torch.Tensor, splits: int, dtype: torch.dtype) -> torch.Tensor:
    return out if splits == 1 else out.sum(dim=0).to(dtype)
