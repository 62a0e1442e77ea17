"""Weight-only dequantize-GEMMs: y = x W^T with W read in its stored, packed form and dequantized in
registers, so a small batch reads the quantized bytes instead of a bf16 copy.

One kernel serves three storage formats (a constexpr picks the unpacking):
- INT8: int8 [out, in] with one scale per output channel (W8A16, `--quantization int8`);
- FP8: float8_e4m3fn [out, in] with one scale per output channel (`--quantization fp8` without fp8 dots);
- GPTQ: 4- or 8-bit values packed along the input rows, [in*bits/32, out], zero points packed along the
  output columns (GPTQ v1 stores them minus one), the group of each input row named by `g_idx`
  (act-order included). AWQ checkpoints are repacked into this layout at load (`AwqMethod`), their
  zero points as they are: so each thread's word holds one output column's consecutive input rows.
Per-channel scales are applied once to the fp32 accumulator; a group's scales to the fp32 product of
each K tile that lies inside one group (else while dequantizing). Packed words are unpacked as
`packed_int` describes, with no int -> float conversion. Small batches split K (`split_k`). The
references are the `dequantize_*` functions of `tokenmill.quantization`; portable Triton (no
Hopper-only instructions).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from enum import IntEnum

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import split_k as split
from tokenmill.kernels.triton.packed_int import (
    OFFSET,
    as_half_offset,
    offset_float,
    unpack_rows,
    zero_points,
)


class WeightFormat(IntEnum):
    INT8 = 0
    FP8 = 1
    GPTQ = 2


# what the kernels compare their FORMAT with (compiled kernels read only constexpr globals)
INT8, FP8, GPTQ = (tl.constexpr(int(f)) for f in (WeightFormat.INT8, WeightFormat.FP8, WeightFormat.GPTQ))
FP8_BITS_UNIT = tl.constexpr(256.0)  # `e4m3_bits_to_half` yields the e4m3 value times 2^-8


@functools.cache
def native_fp8(device: torch.device) -> bool:
    """fp8 -> float conversion instructions: sm_89+ (and Triton's interpreter); elsewhere bit decoding."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (8, 9)


@functools.cache
def compiles_ptx(device: torch.device) -> bool:
    """Inline PTX of sm_80 (bf16x2 FMAs): a GPU of sm_80 or later, not Triton's interpreter (which runs
    no inline PTX)."""
    compiled = os.environ.get("TRITON_INTERPRET") != "1"
    return compiled and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


@triton.jit
def e4m3_bits_to_half(bits):
    """float8_e4m3fn bit patterns (uint8) -> float16 holding value * 2^-8: the sign, exponent and
    mantissa fields shifted into place (the exponent biases differ by 8). Works on GPUs without fp8."""
    wide = bits.to(tl.uint16)
    return (((wide & 0x80) << 8) | ((wide & 0x7F) << 7)).to(tl.float16, bitcast=True)


@triton.jit
def decode_bytes(stored, FORMAT: tl.constexpr, NATIVE_FP8: tl.constexpr):
    """int8 or e4m3 bytes -> float32: int8 + 128 OR-ed into float32 2^23's mantissa (`offset_float`, no
    int -> float instruction); e4m3 by fp8 conversions, or without them (NATIVE_FP8 false) as the value
    times 2^-8 (`e4m3_bits_to_half`)."""
    if FORMAT == INT8:
        values = offset_float(stored.to(tl.int32) + 128) - (OFFSET + 128.0)
    elif NATIVE_FP8:
        values = stored.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    else:
        values = e4m3_bits_to_half(stored).to(tl.float32)
    return values


@triton.jit
def _byte_tile(w_ptr, k, n, mask, stride_wk, stride_wn, FORMAT: tl.constexpr):
    """INT8 or FP8 W^T[k, n] (one value per byte, stored [out, in]) as float32 (fp8 times 2^-8),
    per-channel scales left to the caller."""
    stored = tl.load(w_ptr + k[:, None] * stride_wk + n[None, :] * stride_wn, mask=mask, other=0)
    return decode_bytes(stored, FORMAT, False)


@triton.jit
def packed_values(w_ptr, k0, n0, K, N, stride_wk, BITS: tl.constexpr, BLOCK_K: tl.constexpr,
                  BLOCK_N: tl.constexpr):  # fmt: skip
    """The stored integers (int32) of W^T[k0 : k0+BLOCK_K, n0 : n0+BLOCK_N] ([in * BITS / 32, out]),
    from one load of the words that hold them (k0 is a multiple of the tile: it holds whole words)."""
    per_word: tl.constexpr = 32 // BITS
    rows = k0 // per_word + tl.arange(0, BLOCK_K // per_word)
    n = n0 + tl.arange(0, BLOCK_N)
    mask = (rows * per_word < K)[:, None] & (n < N)[None, :]
    return unpack_rows(tl.load(w_ptr + rows[:, None] * stride_wk + n[None, :], mask=mask, other=0), BITS)


@triton.jit
def zeros_and_scales(zero_ptr, scale_ptr, g_idx_ptr, k0, n, K, N, stride_sg, stride_zg,
                     BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
                     ONE_GROUP: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """(zero point, scale) as float32 for the tile's rows starting at k0 and columns n: one row
    [1, len(n)] when every row of the tile is in one group (ONE_GROUP), else one per row [BLOCK_K, len(n)]
    (groups named by `g_idx`)."""
    if ONE_GROUP:
        group = tl.zeros([1], tl.int32) + k0 // GROUP
        mask = (n < N)[None, :]
    else:
        k = k0 + tl.arange(0, BLOCK_K)
        group = tl.load(g_idx_ptr + k, mask=k < K, other=0)
        mask = (k < K)[:, None] & (n < N)[None, :]
    zeros = zero_points(zero_ptr, group, n, mask, stride_zg, BITS, ZERO_OFFSET)
    scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=mask, other=0.0)
    return zeros, scales.to(tl.float32)


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
class PackedWeight:
    """A weight as one of the formats above stores it: W is [in_features, out_features] after unpacking.
    `scales` is per output channel (INT8, FP8) or [groups, out] (GPTQ); `zeros` and `g_idx` in GPTQ's
    layout, the stored zero points plus `zero_offset` the real ones (1: GPTQ v1, 0: repacked AWQ).
    `group_size` input rows per group; with `groups_in_row_order` (no act-order) group g is rows
    [g*size, (g+1)*size)."""

    format: WeightFormat
    weight: torch.Tensor
    scales: torch.Tensor
    in_features: int
    out_features: int
    zeros: torch.Tensor | None = None
    g_idx: torch.Tensor | None = None
    bits: int = 4
    group_size: int = 1
    groups_in_row_order: bool = False
    zero_offset: int = 1

    def one_group_per_tile(self, block_k: int) -> bool:
        """Whether each BLOCK_K rows of a K tile share one group, so the kernel reads its scales once."""
        return (
            self.format == WeightFormat.GPTQ and self.groups_in_row_order and self.group_size % block_k == 0
        )

    def strides(self) -> tuple[int, int, int, int]:
        """(weight stride along in, along out, scale-row stride, zero-row stride)."""
        if self.format < WeightFormat.GPTQ:  # stored [out, in]
            return self.weight.stride(1), self.weight.stride(0), 0, 0
        assert self.zeros is not None
        return self.weight.stride(0), 1, self.scales.stride(0), self.zeros.stride(0)

    def pointers(self) -> tuple[torch.Tensor, ...]:
        weight = self.weight.view(torch.uint8) if self.format == WeightFormat.FP8 else self.weight
        zeros = self.zeros if self.zeros is not None else self.scales
        g_idx = self.g_idx if self.g_idx is not None else self.scales
        return weight, self.scales, zeros, g_idx


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


# 16-bit activation dtype -> (bit pattern of the offset the kernel ORs packed values into, the bound
# below which offset + value is exact: 7 and 10 explicit mantissa bits)
HALF_OFFSETS = {torch.bfloat16: (0x4300, 128), torch.float16: (0x6400, 1024)}


def half_magic(dtype: torch.dtype, weight: PackedWeight) -> int:
    """HALF_MAGIC for GPTQ-layout weights and `dtype` activations; 0 (float32 dequantization) where the
    values do not fit (8-bit GPTQ with bf16) or the activations are float32."""
    pattern, bound = HALF_OFFSETS.get(dtype, (0, 0))
    return pattern if weight.format == WeightFormat.GPTQ and 2**weight.bits <= bound else 0


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
