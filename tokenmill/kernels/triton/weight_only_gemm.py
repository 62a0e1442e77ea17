"""Weight-only dequantize-GEMMs: y = x W^T with W read in its stored, packed form (`weight_formats`) and
dequantized in registers, so a small batch reads the quantized bytes instead of a bf16 copy.

One kernel serves the three storage formats (a constexpr picks the unpacking). Per-channel scales (INT8,
FP8 without fp8 dots) are applied once to the fp32 accumulator; a group's scales (GPTQ, repacked AWQ) to
the fp32 product of each K tile that lies inside one group (else while dequantizing). Small batches split
K (`split_k`). The references are the `dequantize_*` functions of `tokenmill.quantization`; portable
Triton (no Hopper-only instructions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import split_k as split
from tokenmill.kernels.triton.packed_int import OFFSET, as_half_offset, offset_float
from tokenmill.kernels.triton.weight_formats import (
    FP8,
    FP8_BITS_UNIT,
    GPTQ,
    PackedWeight,
    decode_bytes,
    half_magic,
    packed_values,
    zeros_and_scales,
)


@triton.jit
def _byte_tile(w_ptr, k, n, mask, stride_wk, stride_wn, FORMAT: tl.constexpr):
    """INT8 or FP8 W^T[k, n] (one value per byte, stored [out, in]) as float32 (fp8 times 2^-8),
    per-channel scales left to the caller."""
    stored = tl.load(w_ptr + k[:, None] * stride_wk + n[None, :] * stride_wn, mask=mask, other=0)
    return decode_bytes(stored, FORMAT, False)


@triton.jit
def _dequantized_tile(
    w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k0, n0, K, N, stride_wk, stride_wn, stride_sg, stride_zg,
    FORMAT: tl.constexpr, BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    ONE_GROUP: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """W^T[k0 : k0+BLOCK_K, n0 : n0+BLOCK_N] as float32 (k0, n0 multiples of the tile), group scales
    applied; per-channel scales (INT8, FP8) are left to the caller."""
    k = k0 + tl.arange(0, BLOCK_K)
    n = n0 + tl.arange(0, BLOCK_N)
    # if/else, not an early return: Triton before 3.9 compiles the statements after a static return,
    # and INT8/FP8 pass placeholder pointers the group-scale code cannot take
    if FORMAT < GPTQ:
        tile = _byte_tile(w_ptr, k, n, (k < K)[:, None] & (n < N)[None, :], stride_wk, stride_wn, FORMAT)
    else:
        zeros, scales = zeros_and_scales(
            zero_ptr, scale_ptr, g_idx_ptr, k0, n, K, N, stride_sg, stride_zg, BITS, ZERO_OFFSET, GROUP,
            ONE_GROUP, BLOCK_K,
        )  # fmt: skip
        values = packed_values(w_ptr, k0, n0, K, N, stride_wk, BITS, BLOCK_K, BLOCK_N)
        tile = (offset_float(values) - (OFFSET + zeros)) * scales
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
def k_step(x_ptr, m, m_mask, k0, K, stride_xm, BLOCK_K: tl.constexpr):
    """One step of the K loop: its columns (masked to K) and the activations [BLOCK_M, BLOCK_K] there."""
    k = k0 + tl.arange(0, BLOCK_K)
    k_mask = k < K
    mask = m_mask[:, None] & k_mask[None, :]
    return k, k_mask, tl.load(x_ptr + m[:, None] * stride_xm + k[None, :], mask=mask, other=0.0)


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
    ONE_GROUP: tl.constexpr, HALF_MAGIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """With ONE_GROUP the group's scales multiply each K tile's fp32 product, one multiply per output
    instead of one per weight; the dot product takes the exact integers q - zero, or with HALF_MAGIC
    (16-bit activations) offset + q, the offset and zero point then taken off once per output as
    (offset + zero) * the tile's sum of activations."""
    m, n, m_mask, n_mask, k_start, k_end = program_tile(M, N, K, k_per_split, BLOCK_M, BLOCK_N)
    n0 = tl.program_id(1) * BLOCK_N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        _, _, x = k_step(x_ptr, m, m_mask, k0, K, stride_xm, BLOCK_K)
        if ONE_GROUP:
            zeros, scales = zeros_and_scales(
                zero_ptr, scale_ptr, g_idx_ptr, k0, n, K, N, stride_sg, stride_zg, BITS, ZERO_OFFSET, GROUP,
                ONE_GROUP, BLOCK_K,
            )  # fmt: skip
            values = packed_values(w_ptr, k0, n0, K, N, stride_wk, BITS, BLOCK_K, BLOCK_N)
            if HALF_MAGIC:
                offset = tl.full([1, 1], HALF_MAGIC, tl.int16).to(x.dtype, bitcast=True).to(tl.float32)
                sums = tl.sum(x.to(tl.float32), axis=1)[:, None]
                w = as_half_offset(values, HALF_MAGIC, x.dtype)
                part = tl.dot(x, w, input_precision=DOT) - sums * (offset + zeros)
            else:
                w = offset_float(values) - (OFFSET + zeros)
                part = tl.dot(x, w.to(x.dtype), input_precision=DOT)
            acc += part * scales
        else:
            w = _dequantized_tile(
                w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k0, n0, K, N, stride_wk, stride_wn, stride_sg,
                stride_zg, FORMAT, BITS, ZERO_OFFSET, GROUP, ONE_GROUP, BLOCK_K, BLOCK_N,
            )  # fmt: skip
            acc += tl.dot(x, w.to(x.dtype), input_precision=DOT)
    if FORMAT < GPTQ:
        acc *= _channel_scales(scale_ptr, n, n_mask, FORMAT)[None, :]
    store_tile(out_ptr, acc, m, n, m_mask, n_mask, stride_os, stride_om)


@triton.jit
def _dequantize_kernel(
    w_ptr, scale_ptr, zero_ptr, g_idx_ptr, out_ptr, N, K, stride_wk, stride_wn, stride_sg, stride_zg,
    FORMAT: tl.constexpr, BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    ONE_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    k0, n0 = tl.program_id(0) * BLOCK_K, tl.program_id(1) * BLOCK_N
    k = k0 + tl.arange(0, BLOCK_K)
    n = n0 + tl.arange(0, BLOCK_N)
    w = _dequantized_tile(
        w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k0, n0, K, N, stride_wk, stride_wn, stride_sg, stride_zg,
        FORMAT, BITS, ZERO_OFFSET, GROUP, ONE_GROUP, BLOCK_K, BLOCK_N,
    )  # fmt: skip
    if FORMAT < GPTQ:
        w *= _channel_scales(scale_ptr, n, n < N, FORMAT)[None, :]
    mask = (k < K)[:, None] & (n < N)[None, :]
    tl.store(out_ptr + k[:, None] * N + n[None, :], w.to(out_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class Tiles:
    """One launch shape: BLOCK_M x BLOCK_N outputs per program, stepping BLOCK_K input rows at a time."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4


TILE_ROWS = (16, 64)  # the most tokens the decode tiles, then the medium tiles, take; prefill tiles above


def tiles_for(m: int) -> Tiles:
    """Thin tiles for decode batches, square ones for prefill."""
    if m <= TILE_ROWS[0]:
        return Tiles(16, 64, 128)
    if m <= TILE_ROWS[1]:
        return Tiles(64, 64, 64)
    return Tiles(128, 128, 32)


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
    one_group = weight.one_group_per_tile(tiles.block_k)
    _weight_only_gemm_kernel[(grid_m, grid_n, splits)](
        x, *weight.pointers(), out, m, n, k, k_per_split,
        x.stride(0), stride_wk, stride_wn, stride_sg, stride_zg, out.stride(0) if splits > 1 else 0, n,
        FORMAT=int(weight.format), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset,
        GROUP=weight.group_size, ONE_GROUP=one_group,
        HALF_MAGIC=half_magic(x.dtype, weight) if one_group else 0, BLOCK_M=tiles.block_m,
        BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k, DOT=dot_precision(x), num_warps=tiles.num_warps,
        num_stages=3,
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
