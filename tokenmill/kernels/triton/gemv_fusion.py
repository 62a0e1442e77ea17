"""The fused small-batch path's element-wise work around the quantized GEMVs (`quant_gemv`,
`int4_gemv`, `fp8_gemv`), as `skinny_gemm`'s bf16 GEMVs do it, through `gemv_rows`' prologue: the
RMSNorm of a token row or SiLU(gate) * up of a gate|up row in the prologue, each program normalising its
own row (a row is short, and one program per (tile, row) keeps the rows independent), then the bias added
to the fp32 sums and the residual after rounding to the activation dtype, as the unfused ops round them.

Split K (`int4_gemv`, `fp8_gemv`; `int4_mma` shares the scratch): a GEMV whose output tiles alone leave
the SMs short of bytes in flight (q|k|v, o and down at one token) splits each tile's K range over
programs. Each split stores its fp32 sums and counts itself in; the last split of the tile to arrive adds
the splits in split order (the same sums every run, whichever arrives last), runs the epilogue and resets
the count for the next launch: no reduction kernel, and no atomics on the outputs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.gemv_rows import prologue_finish, prologue_loads, rows_rstd

NORM_BLOCK = 1024  # input elements per step of the RMSNorm prologue's sum of squares
SPLIT_PROGRAMS_PER_SM = 2  # with each K step's loads issued a step ahead (H100: 4 without that)
MAX_SPLIT = 16
PARTIAL_ELEMENTS = 1 << 20  # fp32 split sums of one launch (4 MB per device, allocated once)
MAX_TILE_ROWS = 1 << 16  # (output tile, token row) arrival counts
MAX_ROWS = 16  # token rows a split GEMV takes (the small-batch path stops at 8)
PROLOGUES = {"none": 0, "norm": 1, "silu_mul": 2}  # skinny_gemm's PROLOGUE values


@dataclass(frozen=True)
class Fusion:
    """The element-wise work a GEMV does around its product for the fused small-batch path: the input
    row's RMSNorm (`norm`: weight, eps) or SiLU(gate) * up (`silu_mul`: x is gate|up, twice the weight's
    input width), then `bias` added to the fp32 sums and `residual` after rounding to x's dtype (as a
    separate add would). `input_order`: the weight's rows hold the inputs in this order (act-order GPTQ
    stored in group order, `QuantLinear.input_order`), so the GEMV reads x's columns, and the norm
    weight's, through it; the RMSNorm's mean square does not depend on the order."""

    norm: tuple[torch.Tensor, float] | None = None
    silu_mul: bool = False
    bias: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    input_order: torch.Tensor | None = None

    def in_features(self, x: torch.Tensor) -> int:
        return x.shape[1] // 2 if self.silu_mul else x.shape[1]

    def kernel_args(self, x: torch.Tensor) -> dict[str, object]:
        """The fusion's kernel arguments (placeholder pointers where it has nothing)."""
        norm_weight, eps = self.norm or (x, 0.0)
        prologue = "norm" if self.norm is not None else "silu_mul" if self.silu_mul else "none"
        bias, residual = self.bias, self.residual
        return dict(
            norm_weight_ptr=norm_weight, bias_ptr=x if bias is None else bias,
            residual_ptr=x if residual is None else residual,
            stride_r=0 if residual is None else residual.stride(0), eps=eps, PROLOGUE=PROLOGUES[prologue],
            HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
            NORM_BLOCK=min(NORM_BLOCK, triton.next_power_of_2(self.in_features(x))),
        )  # fmt: skip

    def gather_args(self, x: torch.Tensor) -> dict[str, object]:
        """The kernel arguments of `input_order`, for the GEMVs that read through it (GPTQ's layout)."""
        order = self.input_order
        return dict(order_ptr=x if order is None else order, GATHER=order is not None)


NO_FUSION = Fusion()


@triton.jit
def row_rstd(x_row, K, eps, PROLOGUE: tl.constexpr, NORM_BLOCK: tl.constexpr):
    """[1, 1]: the RMSNorm factor 1 / sqrt(mean(x^2) + eps) of the row under PROLOGUE 1, else 0."""
    one_row = tl.arange(0, 1)
    return rows_rstd(x_row + one_row[:, None], one_row == 0, K, eps, PROLOGUE, 1, NORM_BLOCK)


@triton.jit
def row_inputs(x_row, k, K, norm_weight_ptr, order_ptr, rstd, PROLOGUE: tl.constexpr, GATHER: tl.constexpr):
    """[1, len(k)] fp32 inputs at weight rows k of the row, after the prologue (`gemv_rows`)."""
    x, second = row_loads(x_row, k, K, norm_weight_ptr, order_ptr, PROLOGUE, GATHER)
    return prologue_finish(x, second, rstd, PROLOGUE)


@triton.jit
def row_loads(x_row, k, K, norm_weight_ptr, order_ptr, PROLOGUE: tl.constexpr, GATHER: tl.constexpr):
    """The loads of `row_inputs` (`gemv_rows.prologue_loads`), for `gemv_rows.prologue_finish`: apart,
    so that a K loop can issue its next step's before it computes this one's. GATHER: weight row k
    multiplies input column order[k] (`Fusion.input_order`)."""
    k_mask = k < K
    column = tl.load(order_ptr + k, mask=k_mask, other=0) if GATHER else k
    return prologue_loads(
        x_row + column[None, :], k_mask[None, :], K, norm_weight_ptr + column, k_mask, PROLOGUE
    )


@triton.jit
def store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r,
              HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr):  # fmt: skip
    """fp32 sums y [BLOCK_N] (+ bias), rounded to the output dtype (+ residual), stored at columns n."""
    if HAS_BIAS:
        y += tl.load(bias_ptr + n, mask=n_mask, other=0.0).to(tl.float32)
    out = y.to(out_ptr.dtype.element_ty)
    if HAS_RESIDUAL:
        out = out + tl.load(residual_ptr + row * stride_r + n, mask=n_mask, other=0.0)
    tl.store(out_ptr + row * stride_o + n, out, mask=n_mask)


@triton.jit
def split_program(rows, K, k_per_split, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's (split, tile_row, row, output columns n, K range start and end) in a launch of one
    program per (output tile, token row, split), the splits of a tile row adjacent, then its rows."""
    pid = tl.program_id(0)
    split, tile_row = pid % SPLIT, pid // SPLIT
    tile, row = tile_row // rows, tile_row % rows
    k_start = split * k_per_split
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    return split, tile_row, row, n, k_start, tl.minimum(k_start + k_per_split, K)


@triton.jit
def store_split_row(
    y, out_ptr, partial_ptr, count_ptr, tile_row, split, bias_ptr, residual_ptr, row, n, n_mask, stride_o,
    stride_r, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
):  # fmt: skip
    """`store_row` for a program that summed one split of K (of SPLIT): the last split of `tile_row` to
    arrive stores the splits' sum."""
    if SPLIT == 1:
        store_row(
            y, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL
        )
    else:
        partials = partial_ptr + tile_row * SPLIT * BLOCK_N + tl.arange(0, BLOCK_N)
        tl.store(partials + split * BLOCK_N, y)
        tl.debug_barrier()  # every thread's sums stored before the count releases them
        if tl.atomic_add(count_ptr + tile_row, 1, sem="acq_rel") == SPLIT - 1:
            total = tl.zeros([BLOCK_N], tl.float32)
            for s in tl.static_range(SPLIT):
                total += tl.load(partials + s * BLOCK_N, cache_modifier=".cg")
            store_row(
                total, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r, HAS_BIAS,
                HAS_RESIDUAL,
            )  # fmt: skip
            tl.atomic_xchg(count_ptr + tile_row, 0)


def split_count(tiles: int, k: int, block_k: int, block_n: int, sms: int) -> int:
    """The fewest splits of K (a power of two) giving one token row's `tiles` SPLIT_PROGRAMS_PER_SM
    programs per SM, each split the same whole number of K steps of `block_k`, the split sums of MAX_ROWS
    rows within the scratch. Independent of the batch width, so the warm-up's widths compile every variant."""
    split = 1
    while (
        tiles * split < SPLIT_PROGRAMS_PER_SM * sms
        and split < MAX_SPLIT
        and k % (2 * split * block_k) == 0
        and tiles * MAX_ROWS * 2 * split * block_n <= PARTIAL_ELEMENTS
    ):
        split *= 2
    return split if tiles * MAX_ROWS <= MAX_TILE_ROWS else 1


@functools.cache
def split_scratch(device: torch.device) -> dict[str, torch.Tensor]:
    """The split sums and arrival counts (`partial_ptr`, `count_ptr`), one set per device: launches on one
    stream run one after another, and each batch width's first launch runs eagerly, before any CUDA graph
    is captured."""
    return dict(
        partial_ptr=torch.empty(PARTIAL_ELEMENTS, dtype=torch.float32, device=device),
        count_ptr=torch.zeros(MAX_TILE_ROWS, dtype=torch.int32, device=device),
    )
