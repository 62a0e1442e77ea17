"""Weight-only dequantize-GEMMs: y = x W^T with W read in its stored, packed form (`weight_formats`) and
dequantized in registers, so a small batch reads the quantized bytes instead of a bf16 copy.

One kernel serves the three storage formats (a constexpr picks the unpacking). It computes y^T = W x^T:
the dequantized weight tile [BLOCK_N, BLOCK_K] is the tensor cores' first operand, which they take
from registers, and the activations x^T [BLOCK_K, BLOCK_M] the second (with x first, a 32-token tile
took 240 against 138 us a Qwen3-8B AWQ layer, H200). Group scales (GPTQ, repacked AWQ) are applied
while dequantizing, so each step's product accumulates inside the dot, and the weights are the values
the dense route's `dequantize` writes. On Hopper this keeps one K step's wgmma in flight while the next
tile is dequantized; scaling each step's product instead made Triton wait for every dot (64 tokens,
H100: 255 against 189 us). Both: bench/results/s29-w4-gemm/. Per-channel scales (INT8, FP8 without fp8
dots) are applied once to the fp32 accumulator. Small batches split K (`split_k`). The references are
the `dequantize_*` functions of `tokenmill.quantization`; portable Triton (no Hopper-only instructions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import split_k as split
from tokenmill.kernels.triton.packed_int import OFFSET, offset_float, unpack_columns
from tokenmill.kernels.triton.weight_formats import (
    FP8,
    FP8_BITS_UNIT,
    GPTQ,
    PackedWeight,
    decode_bytes,
    zeros_and_scales,
)


@triton.jit
def _dequantized_tile(
    w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k0, n, K, N, stride_wk, stride_wn, stride_sg, stride_zg,
    FORMAT: tl.constexpr, BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    ONE_GROUP: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """W[n, k0 : k0+BLOCK_K] ([len(n), BLOCK_K], k0 a multiple of the tile) as float32, group scales
    applied; per-channel scales (INT8, FP8) are left to the caller."""
    k = k0 + tl.arange(0, BLOCK_K)
    # if/else, not an early return: Triton before 3.9 compiles the statements after a static return,
    # and INT8/FP8 pass placeholder pointers the group-scale code cannot take
    if FORMAT < GPTQ:
        mask = (n < N)[:, None] & (k < K)[None, :]
        stored = tl.load(w_ptr + n[:, None] * stride_wn + k[None, :] * stride_wk, mask=mask, other=0)
        tile = decode_bytes(stored, FORMAT, False)
    else:
        per_word: tl.constexpr = 32 // BITS
        rows = k0 // per_word + tl.arange(0, BLOCK_K // per_word)  # whole words: k0 starts one
        mask = (n < N)[:, None] & (rows * per_word < K)[None, :]
        words = tl.load(w_ptr + rows[None, :] * stride_wk + n[:, None], mask=mask, other=0)
        zeros, scales = zeros_and_scales(
            zero_ptr, scale_ptr, g_idx_ptr, k0, n, K, N, stride_sg, stride_zg, BITS, ZERO_OFFSET, GROUP,
            ONE_GROUP, BLOCK_K,
        )  # fmt: skip
        values = offset_float(unpack_columns(words, BITS))
        tile = (values - (OFFSET + tl.trans(zeros))) * tl.trans(scales)
    return tile


@triton.jit
def _channel_scales(scale_ptr, n, n_mask, FORMAT: tl.constexpr):
    """Per-output-channel scales of INT8 and FP8, the latter with `e4m3_bits_to_half`'s 2^-8 undone."""
    scales = tl.load(scale_ptr + n, mask=n_mask, other=0.0)
    return scales * FP8_BITS_UNIT if FORMAT == FP8 else scales


@triton.jit
def program_tile(M, N, K, k_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's output rows and columns (axes 0 and 1) with their masks, and the K extent
    [start, end) its split reduces (axis 2)."""
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    start = tl.program_id(2) * k_per_split
    return m, n, m < M, n < N, start, tl.minimum(start + k_per_split, K)


@triton.jit
def store_tile(out_ptr, acc, m, n, m_mask, n_mask, stride_os, stride_om):
    """The accumulator, to the output itself or (split-K) to this split's fp32 partial."""
    out = out_ptr + tl.program_id(2) * stride_os + m[:, None] * stride_om + n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton.jit(do_not_specialize=["M"])
def _weight_only_gemm_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, g_idx_ptr, out_ptr, M, N, K, k_per_split,
    stride_xm, stride_wk, stride_wn, stride_sg, stride_zg, stride_os, stride_om,
    FORMAT: tl.constexpr, BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    ONE_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Program (rows, columns, split): acc [BLOCK_N, BLOCK_M] = y^T of its tile over its K extent."""
    m, n, m_mask, n_mask, k_start, k_end = program_tile(M, N, K, k_per_split, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x_t = tl.load(
            x_ptr + m[None, :] * stride_xm + k[:, None], mask=m_mask[None, :] & (k < K)[:, None], other=0.0
        )
        w = _dequantized_tile(
            w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k0, n, K, N, stride_wk, stride_wn, stride_sg, stride_zg,
            FORMAT, BITS, ZERO_OFFSET, GROUP, ONE_GROUP, BLOCK_K,
        )  # fmt: skip
        acc = tl.dot(w.to(x_t.dtype), x_t, acc, input_precision=DOT)
    if FORMAT < GPTQ:
        acc *= _channel_scales(scale_ptr, n, n_mask, FORMAT)[:, None]
    out = out_ptr + tl.program_id(2) * stride_os + m[None, :] * stride_om + n[:, None]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=n_mask[:, None] & m_mask[None, :])


@triton.jit
def _dequantize_kernel(
    w_ptr, scale_ptr, zero_ptr, g_idx_ptr, out_ptr, N, K, stride_wk, stride_wn, stride_sg, stride_zg,
    FORMAT: tl.constexpr, BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    ONE_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    k0 = tl.program_id(0) * BLOCK_K
    k = k0 + tl.arange(0, BLOCK_K)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    w = _dequantized_tile(
        w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k0, n, K, N, stride_wk, stride_wn, stride_sg, stride_zg,
        FORMAT, BITS, ZERO_OFFSET, GROUP, ONE_GROUP, BLOCK_K,
    )  # fmt: skip
    if FORMAT < GPTQ:
        w *= _channel_scales(scale_ptr, n, n < N, FORMAT)[:, None]
    mask = (n < N)[:, None] & (k < K)[None, :]
    tl.store(out_ptr + k[None, :] * N + n[:, None], w.to(out_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class Tiles:
    """One launch shape: BLOCK_M x BLOCK_N outputs per program, stepping BLOCK_K input rows at a time
    through `stages` pipelined loads."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    stages: int = 3


# Qwen3-8B layers, H200 (bench/results/s29-w4-gemm/): 64 outputs, as many token rows as the batch (up
# to 128), one group of 128 inputs a K step; the widest tile steps 64 inputs, so with 16-bit activations
# its 3 stages fit the 99 KB of shared memory sm_86, sm_89 and sm_120 give a program (at 96 tokens, AWQ
# / GPTQ 8-bit / INT8: 241 / 225 / 205 us a layer, 268 / 301 / 280 with 128 inputs in 2 stages).
_TILES = (
    Tiles(16, 64, 128),
    Tiles(32, 64, 128, stages=4),
    Tiles(64, 64, 128),
    Tiles(128, 64, 64),
)
# The most tokens each tile shape of `tiles_for` takes but the last, which takes any batch.
TILE_ROWS = tuple(tiles.block_m for tiles in _TILES[:-1])


def tiles_for(m: int) -> Tiles:
    """The narrowest tile that holds the batch's rows (the widest past them all)."""
    return next((tiles for tiles in _TILES if m <= tiles.block_m), _TILES[-1])


def pipeline_stages(tiles: Tiles, dtype: torch.dtype) -> int:
    """The tile's stages for 16-bit activations; float32 ones load unpipelined: their tiles take twice
    the shared memory, and with groups read per input row even 2 stages of the 32- and 64-row tiles
    pass the 99 KB of sm_86, sm_89 and sm_120 (100-120 KB; one stage 48-64)."""
    return tiles.stages if dtype.itemsize <= 2 else 1


def dot_precision(x: torch.Tensor) -> str:
    """float32 activations get exact float32 products (Triton would use TF32); 16-bit ones ignore this."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def weight_only_gemm(
    x: torch.Tensor, weight: PackedWeight, split_k: int | None = None, tiles: Tiles | None = None
) -> torch.Tensor:
    """x [tokens, in] (contiguous rows) -> [tokens, out] in x's dtype. `split_k` and `tiles` None: chosen
    here (bench/quant_gemm.py --tune passes others)."""
    m, k = x.shape
    n = weight.out_features
    tiles = tiles or tiles_for(m)
    grid_m, grid_n = triton.cdiv(m, tiles.block_m), triton.cdiv(n, tiles.block_n)
    splits, k_per_split = split.plan(k, tiles.block_k, grid_m * grid_n, x.device, split_k)
    out = split.output(x, n, splits)
    stride_wk, stride_wn, stride_sg, stride_zg = weight.strides()
    _weight_only_gemm_kernel[(grid_m, grid_n, splits)](
        x, *weight.pointers(), out, m, n, k, k_per_split,
        x.stride(0), stride_wk, stride_wn, stride_sg, stride_zg, out.stride(0) if splits > 1 else 0, n,
        FORMAT=int(weight.format), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset,
        GROUP=weight.group_size, ONE_GROUP=weight.one_group_per_tile(tiles.block_k), BLOCK_M=tiles.block_m,
        BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k, DOT=dot_precision(x), num_warps=tiles.num_warps,
        num_stages=pipeline_stages(tiles, x.dtype),
    )  # fmt: skip
    return split.reduce(out, splits, x.dtype)


def dequantize(weight: PackedWeight, dtype: torch.dtype) -> torch.Tensor:
    """W [in, out] in `dtype`: for batches large enough that a dense GEMM beats dequantizing per tile."""
    k, n = weight.in_features, weight.out_features
    out = torch.empty(k, n, dtype=dtype, device=weight.weight.device)
    stride_wk, stride_wn, stride_sg, stride_zg = weight.strides()
    grid = (triton.cdiv(k, 64), triton.cdiv(n, 64))
    _dequantize_kernel[grid](
        *weight.pointers(), out, n, k, stride_wk, stride_wn, stride_sg, stride_zg,
        FORMAT=int(weight.format), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset,
        GROUP=weight.group_size, ONE_GROUP=weight.one_group_per_tile(64), BLOCK_N=64, BLOCK_K=64,
    )  # fmt: skip
    return out
