"""FP8 block-scaled GEMM (DeepSeek-V3 / Qwen3-FP8 checkpoints): y = x W^T with W float8_e4m3fn [out, in]
and one scale per [block_out, block_in] tile.

On GPUs with fp8 tensor cores (sm_89+) the activations are quantized per token and group of block_in
columns (`quantize_token_groups`, dynamic scales) and each K tile is an fp8 x fp8 dot whose fp32 result is
scaled by the activation group's and the weight tile's scales before it is accumulated. Elsewhere the
weight bytes are decoded into the activation dtype in registers and the activations stay unquantized. The
references are `reference.quantize_token_groups` and `fp8_block_gemm` in `tokenmill.quantization.fp8`.

The fp8 operands are passed as float8 tensors: read as uint8 and bitcast, each tile passed through
registers instead of being copied to shared memory asynchronously, and the kernel ran at half speed (H200,
Qwen3-4B layer at 358 tokens: 254 -> 144 us; docs/benchmarks.md, 2026-11-25, twentieth session). This is
the route of every batch of two tokens or more on GPUs where PyTorch's GEMM takes no block scales (sm_89,
sm_120); on Hopper, of batches below cuBLAS's start (`triton_gemms.DENSE_FROM_TOKENS`), fp16 models and
shapes cuBLAS does not take.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import split_k as split
from tokenmill.kernels.triton.fp8_quant import quantize_token_groups
from tokenmill.kernels.triton.weight_formats import FP8_BITS_UNIT, e4m3_bits_to_half
from tokenmill.kernels.triton.weight_only_gemm import TILE_ROWS, dot_precision, store_tile

# Row tiles that sweep the output columns together (Qwen3-4B gate|up at 358 rows: 20% faster than 1).
GROUP_M = tl.constexpr(8)


class Tile(NamedTuple):
    """A launch shape: BLOCK_M x BLOCK_N outputs a program, pipelined `stages` K steps deep."""

    block_m: int
    block_n: int
    stages: int
    mask_rows: bool


# 64 x 128 tiles at three stages fit two programs an SM into 100 KB of shared memory (sm_89, sm_120); the
# decode tile's fourth stage and masked rows took Qwen3-8B's layer at 2 tokens from 87 to 78 us (H200).
DECODE_TILE, PREFILL_TILE = Tile(16, 64, 4, True), Tile(64, 128, 3, False)


@triton.jit
def _grouped_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's row tile and column tile: GROUP_M row tiles take each column tile in turn, so the
    programs running together read the same weight tiles (from L2 after the first)."""
    pid = tl.program_id(0)
    width = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (pid // width) * GROUP_M
    rows_of_group = tl.minimum(tl.cdiv(M, BLOCK_M) - first_m, GROUP_M)
    return first_m + (pid % width) % rows_of_group, (pid % width) // rows_of_group


@triton.jit(do_not_specialize=["M"])
def _fp8_block_gemm_kernel(
    x_ptr, x_scale_ptr, w_ptr, w_scale_ptr, out_ptr, M, N, K, k_per_split,
    stride_xm, stride_xsm, stride_wn, stride_wsn, stride_os, stride_om,
    BLOCK_OUT: tl.constexpr, FP8_DOT: tl.constexpr, EVEN_K: tl.constexpr, MASK_ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """BLOCK_K is the weight tiles' block_in, so each K step meets one column of weight scales: one scale
    for the whole tile where a weight block spans it. Columns past the output, and rows unless MASK_ROWS,
    wrap around in the loads instead of being masked (their sums are not stored): masks cost the prefill
    tile 7-12%, while the decode tile, whose rows are mostly past the tokens, is faster not loading them."""
    tile_m, tile_n = _grouped_tile(M, N, BLOCK_M, BLOCK_N)
    m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_start = tl.program_id(2) * k_per_split
    k = tl.arange(0, BLOCK_K)
    m_mask = m < M
    rows = m if MASK_ROWS else m % M  # wrapped rows' sums are not stored
    x_ptrs = x_ptr + rows[:, None] * stride_xm + (k_start + k)[None, :]
    w_ptrs = w_ptr + (n % N)[None, :] * stride_wn + (k_start + k)[:, None]
    x_scale_ptrs = x_scale_ptr + rows * stride_xsm
    if BLOCK_OUT % BLOCK_N == 0:
        w_scale_ptrs = w_scale_ptr + (tile_n * BLOCK_N // BLOCK_OUT) * stride_wsn
    else:
        w_scale_ptrs = w_scale_ptr + ((n % N) // BLOCK_OUT)[None, :] * stride_wsn
    row_mask = m_mask if MASK_ROWS else tl.full([BLOCK_M], 1, tl.int1)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_start, tl.minimum(k_start + k_per_split, K), BLOCK_K):
        k_mask = tl.full([BLOCK_K], 1, tl.int1) if EVEN_K else k < K - k0
        x = tl.load(x_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_mask[:, None], other=0.0)
        w_scale = tl.load(w_scale_ptrs + k0 // BLOCK_K)
        if FP8_DOT:
            x_scale = tl.load(x_scale_ptrs + k0 // BLOCK_K, mask=row_mask, other=0.0)
            acc = tl.fma(tl.dot(x, w), x_scale[:, None] * w_scale, acc)
        else:
            part = tl.dot(x, e4m3_bits_to_half(w).to(x.dtype), input_precision=DOT)
            acc = tl.fma(part, w_scale * FP8_BITS_UNIT, acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    store_tile(out_ptr, acc, m, n, m_mask, n < N, stride_os, stride_om)


@functools.cache
def has_fp8_dot(device: torch.device) -> bool:
    """fp8 tensor-core dots: Ada, Hopper, Blackwell (sm_89+). Not on the CPU: Triton's interpreter rounds
    float->fp8 wrongly, so there the weight-decoding path (exact) runs unless a test asks otherwise."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_block_gemm(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    block: tuple[int, int],
    split_k: int | None = None,
    fp8_dot: bool | None = None,
) -> torch.Tensor:
    """x [tokens, in] -> [tokens, out] in x's dtype; `fp8_dot` None: where the GPU has it."""
    m, k = x.shape
    n = weight.shape[0]
    block_out, block_k = block
    use_fp8 = has_fp8_dot(x.device) if fp8_dot is None else fp8_dot
    if use_fp8:
        activation, activation_scales = quantize_token_groups(x, block_k)
        stored = weight
    else:
        activation, activation_scales = x, weight_scale_inv  # the scales are not read without fp8 dots
        stored = weight.view(torch.uint8)
    tile = DECODE_TILE if m <= TILE_ROWS[0] else PREFILL_TILE
    tiles = triton.cdiv(m, tile.block_m) * triton.cdiv(n, tile.block_n)
    splits, k_per_split = split.plan(k, block_k, tiles, x.device, split_k)
    out = split.output(x, n, splits)
    _fp8_block_gemm_kernel[(tiles, 1, splits)](
        activation, activation_scales, stored, weight_scale_inv, out, m, n, k, k_per_split,
        activation.stride(0), activation_scales.stride(0), weight.stride(0), weight_scale_inv.stride(0),
        out.stride(0) if splits > 1 else 0, n,
        BLOCK_OUT=block_out, FP8_DOT=use_fp8, EVEN_K=k % block_k == 0, MASK_ROWS=tile.mask_rows,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=block_k, DOT=dot_precision(x), num_warps=4,
        num_stages=tile.stages,
    )  # fmt: skip
    return split.reduce(out, splits, x.dtype)
