"""The row-wise parts every fused small-batch GEMV shares (`skinny_gemm`, `lora_fold`'s shrink programs,
the quantized GEMVs through `gemv_fusion`): the prologue's activations, each row's RMSNorm factor, and a
tile's K loop.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def four_columns(t, ROWS: tl.constexpr):
    """[ROWS, 4] -> its four columns, each [ROWS] (a word's four inputs, in the word-wise GEMVs)."""
    even, odd = tl.split(tl.reshape(t, [ROWS, 2, 2]))  # columns (0, 2) and (1, 3)
    c0, c2 = tl.split(even)
    c1, c3 = tl.split(odd)
    return c0, c1, c2, c3


@triton.jit
def prologue_activations(x_ptrs, x_mask, k, norm_weight_ptrs, k_mask, rstd, PROLOGUE: tl.constexpr):
    """One [BLOCK_M, BLOCK_K] block of the GEMV input in fp32, rounded to the activation dtype as the
    unfused kernels round their outputs: PROLOGUE 0 the raw rows, 1 their RMSNorm (`rstd` [BLOCK_M, 1]),
    2 SiLU(gate) * up of their gate|up halves (up is `k` columns past gate)."""
    x, second = prologue_loads(x_ptrs, x_mask, k, norm_weight_ptrs, k_mask, PROLOGUE)
    return prologue_finish(x, second, rstd, PROLOGUE)


@triton.jit
def prologue_loads(x_ptrs, x_mask, k, norm_weight_ptrs, k_mask, PROLOGUE: tl.constexpr):
    """The loads of `prologue_activations`, apart so that a K loop can issue the next step's before it
    computes this one's: (x, the norm weight [1, BLOCK_K] or up, or x again)."""
    x = tl.load(x_ptrs, mask=x_mask, other=0.0)
    second = x
    if PROLOGUE == 1:
        second = tl.load(norm_weight_ptrs, mask=k_mask, other=0.0)[None, :]
    elif PROLOGUE == 2:
        second = tl.load(x_ptrs + k, mask=x_mask, other=0.0)
    return x, second


@triton.jit
def prologue_finish(x, second, rstd, PROLOGUE: tl.constexpr):
    """The arithmetic of `prologue_activations` on what `prologue_loads` returned."""
    dtype = x.dtype
    x = x.to(tl.float32)
    if PROLOGUE == 1:  # one return at the end: Triton 3.6 compiles the code after a static early return
        x = (second * (x * rstd).to(dtype)).to(tl.float32)
    elif PROLOGUE == 2:
        x = (x * tl.sigmoid(x) * second.to(tl.float32)).to(dtype).to(tl.float32)
    return x


@triton.jit
def rows_rstd(x_rows, row_mask, k, eps, PROLOGUE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK: tl.constexpr):
    """[BLOCK_M, 1]: each row's RMSNorm factor 1 / sqrt(mean(x^2) + eps) under PROLOGUE 1 (else 0),
    summed BLOCK columns at a time; x_rows [BLOCK_M, 1] points at the rows."""
    rstd = tl.zeros([BLOCK_M, 1], dtype=tl.float32)
    if PROLOGUE == 1:
        squares = tl.zeros([BLOCK_M, BLOCK], dtype=tl.float32)
        for k0 in range(0, k, BLOCK):
            ks = k0 + tl.arange(0, BLOCK)
            x_mask = row_mask[:, None] & (ks < k)[None, :]
            x = tl.load(x_rows + ks[None, :], mask=x_mask, other=0.0).to(tl.float32)
            squares += x * x
        rstd = tl.rsqrt(tl.sum(squares, 1) / k + eps)[:, None]
    return rstd


@triton.jit
def tile_products(
    x_rows, row_mask, rstd, w_rows, w_mask, k, norm_weight_ptr,
    PROLOGUE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """[BLOCK_M, BLOCK_N] fp32: the prologue's activations of the rows `x_rows` ([BLOCK_M, 1] pointers)
    times the BLOCK_N weight rows `w_rows` ([BLOCK_N, 1] pointers, K contiguous) `w_mask` keeps. One row
    on the CUDA cores, through a [BLOCK_N, BLOCK_K] accumulator summed once at the end; more on the
    tensor cores."""
    if BLOCK_M == 1:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < k
        x_mask = row_mask[:, None] & k_mask[None, :]
        a = prologue_activations(
            x_rows + ks[None, :], x_mask, k, norm_weight_ptr + ks, k_mask, rstd, PROLOGUE
        )
        w = tl.load(w_rows + ks[None, :], mask=w_mask[:, None] & k_mask[None, :], other=0.0)
        if BLOCK_M == 1:
            acc += w.to(tl.float32) * a
        else:
            acc = tl.dot(a.to(w.dtype), tl.trans(w), acc, input_precision="ieee")
    return tl.sum(acc, 1)[None, :] if BLOCK_M == 1 else acc
