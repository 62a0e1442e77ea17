"""Weight-only dequantize-GEMMs: y = x W^T with W read in its stored, packed form and dequantized in
registers, so a small batch reads the quantized bytes instead of a bf16 copy.

One kernel serves four storage formats (a constexpr picks the unpacking):
- INT8: int8 [out, in] with one scale per output channel (W8A16, `--quantization int8`);
- FP8: float8_e4m3fn [out, in] with one scale per output channel (`--quantization fp8` without fp8 dots);
- AWQ: int4 packed eight output columns per int32 in AWQ's interleaved order, [in, out/8], with a scale
  and zero point per group of input rows;
- GPTQ: 4- or 8-bit values packed along the input rows, [in*bits/32, out], zero points packed along the
  output columns (stored minus one), the group of each input row named by `g_idx` (act-order included).
Per-channel scales are applied once to the fp32 accumulator; group scales while dequantizing. Small
batches split K (`split_k`). The references are the `dequantize_*` functions of `tokenmill.quantization`;
portable Triton (no Hopper-only instructions).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import split_k as split


class WeightFormat(IntEnum):
    INT8 = 0
    FP8 = 1
    AWQ = 2
    GPTQ = 3


# what the kernels compare their FORMAT with (compiled kernels read only constexpr globals)
INT8, FP8, AWQ = (tl.constexpr(int(f)) for f in (WeightFormat.INT8, WeightFormat.FP8, WeightFormat.AWQ))
FP8_BITS_UNIT = tl.constexpr(256.0)  # `e4m3_bits_to_half` yields the e4m3 value times 2^-8


@triton.jit
def e4m3_bits_to_half(bits):
    """float8_e4m3fn bit patterns (uint8) -> float16 holding value * 2^-8: the sign, exponent and
    mantissa fields shifted into place (the exponent biases differ by 8). Works on GPUs without fp8."""
    wide = bits.to(tl.uint16)
    return (((wide & 0x80) << 8) | ((wide & 0x7F) << 7)).to(tl.float16, bitcast=True)


@triton.jit
def _dequantized_tile(
    w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k, n, k_mask, n_mask, K, N, stride_wk, stride_wn, stride_sg,
    stride_zg, FORMAT: tl.constexpr, BITS: tl.constexpr, GROUP: tl.constexpr, ONE_GROUP: tl.constexpr,
):  # fmt: skip
    """W^T[k, n] as float32 [BLOCK_K, BLOCK_N] (k and n start at multiples of 8); per-channel scales
    (INT8, FP8) are left to the caller. Each packed word is loaded once and unpacked into its values.
    ONE_GROUP: every row of the tile is in the same group (groups in row order, GROUP a multiple of
    BLOCK_K), so one row of zero points and scales serves the whole tile."""
    mask = k_mask[:, None] & n_mask[None, :]
    if FORMAT < AWQ:  # one value per byte, [out, in]
        stored = tl.load(w_ptr + k[:, None] * stride_wk + n[None, :] * stride_wn, mask=mask, other=0)
        w = (stored if FORMAT == INT8 else e4m3_bits_to_half(stored)).to(tl.float32)
    else:
        if ONE_GROUP:
            group = tl.zeros([1], tl.int32) + tl.min(k, 0) // GROUP
            group_mask = n_mask[None, :]
        else:
            group = k // GROUP if FORMAT == AWQ else tl.load(g_idx_ptr + k, mask=k_mask, other=0)
            group_mask = mask
        if FORMAT == AWQ:  # column j of a word sits in nibble j // 2 + 4 * (j % 2)
            block_n: tl.constexpr = n.shape[0]
            column = tl.arange(0, 8)
            nibble_shifts = 4 * (column // 2 + 4 * (column % 2))
            word_columns = tl.min(n, 0) // 8 + tl.arange(0, block_n // 8)
            word_mask = k_mask[:, None] & (word_columns * 8 < N)[None, :]
            words = tl.load(w_ptr + k[:, None] * stride_wk + word_columns[None, :], mask=word_mask, other=0)
            unpacked = (words[:, :, None] >> nibble_shifts[None, None, :]) & 0xF  # [BLOCK_K, BLOCK_N/8, 8]
            shift = (((n % 8) // 2 + 4 * (n % 2)) * 4)[None, :]
            zero_ptrs = zero_ptr + group[:, None] * stride_zg + (n // 8)[None, :]
            zeros = tl.load(zero_ptrs, mask=group_mask, other=0)
            values = tl.reshape(unpacked, [k.shape[0], block_n]) - ((zeros >> shift) & 0xF)
        else:  # GPTQ: values along the input rows, zero points (minus one) along the output columns
            per_word: tl.constexpr = 32 // BITS
            ones: tl.constexpr = (1 << BITS) - 1
            block_k: tl.constexpr = k.shape[0]
            word_rows = tl.min(k, 0) // per_word + tl.arange(0, block_k // per_word)
            word_mask = (word_rows * per_word < K)[:, None] & n_mask[None, :]
            words = tl.load(w_ptr + word_rows[:, None] * stride_wk + n[None, :], mask=word_mask, other=0)
            value_shifts = tl.arange(0, per_word) * BITS
            unpacked = (words[:, None, :] >> value_shifts[None, :, None]) & ones  # [rows/word, word, BLOCK_N]
            zero_ptrs = zero_ptr + group[:, None] * stride_zg + (n // per_word)[None, :]
            zeros = tl.load(zero_ptrs, mask=group_mask, other=0)
            values = tl.reshape(unpacked, [block_k, n.shape[0]])
            values -= ((zeros >> ((n % per_word) * BITS)[None, :]) & ones) + 1
        scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=group_mask, other=0.0)
        w = values.to(tl.float32) * scales.to(tl.float32)
    return w


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
    FORMAT: tl.constexpr, BITS: tl.constexpr, GROUP: tl.constexpr, ONE_GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    m, n, m_mask, n_mask, k_start, k_end = program_tile(M, N, K, k_per_split, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        k, k_mask, x = k_step(x_ptr, m, m_mask, k0, K, stride_xm, BLOCK_K)
        w = _dequantized_tile(
            w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k, n, k_mask, n_mask, K, N, stride_wk, stride_wn,
            stride_sg, stride_zg, FORMAT, BITS, GROUP, ONE_GROUP,
        )  # fmt: skip
        acc += tl.dot(x, w.to(x.dtype), input_precision=DOT)
    if FORMAT < AWQ:
        acc *= _channel_scales(scale_ptr, n, n_mask, FORMAT)[None, :]
    store_tile(out_ptr, acc, m, n, m_mask, n_mask, stride_os, stride_om)


@triton.jit
def _dequantize_kernel(
    w_ptr, scale_ptr, zero_ptr, g_idx_ptr, out_ptr, N, K, stride_wk, stride_wn, stride_sg, stride_zg,
    FORMAT: tl.constexpr, BITS: tl.constexpr, GROUP: tl.constexpr, ONE_GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (k < K)[:, None] & (n < N)[None, :]
    w = _dequantized_tile(
        w_ptr, scale_ptr, zero_ptr, g_idx_ptr, k, n, k < K, n < N, K, N, stride_wk, stride_wn, stride_sg,
        stride_zg, FORMAT, BITS, GROUP, ONE_GROUP,
    )  # fmt: skip
    if FORMAT < AWQ:
        w *= _channel_scales(scale_ptr, n, n < N, FORMAT)[None, :]
    tl.store(out_ptr + k[:, None] * N + n[None, :], w.to(out_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class PackedWeight:
    """A weight as one of the formats above stores it: W is [in_features, out_features] after unpacking.
    `scales` is per output channel (INT8, FP8) or [groups, out] (AWQ, GPTQ); `zeros` and `g_idx` as the
    checkpoint stores them (AWQ, GPTQ; `g_idx` GPTQ only). `group_size` input rows per group; with
    `groups_in_row_order` (GPTQ without act-order; AWQ always) group g is rows [g*size, (g+1)*size)."""

    format: WeightFormat
    weight: torch.Tensor
    scales: torch.Tensor
    in_features: int
    out_features: int
    zeros: torch.Tensor | None = None
    g_idx: torch.Tensor | None = None
    bits: int = 4
    group_size: int = 1
    groups_in_row_order: bool = False  # always so for AWQ

    def one_group_per_tile(self, block_k: int) -> bool:
        """Whether each BLOCK_K rows of a K tile share one group, so the kernel reads its scales once."""
        in_row_order = self.format == WeightFormat.AWQ or self.groups_in_row_order
        return self.format >= WeightFormat.AWQ and in_row_order and self.group_size % block_k == 0

    def strides(self) -> tuple[int, int, int, int]:
        """(weight stride along in, along out, scale-row stride, zero-row stride)."""
        if self.format < WeightFormat.AWQ:  # stored [out, in]
            return self.weight.stride(1), self.weight.stride(0), 0, 0
        assert self.zeros is not None
        return self.weight.stride(0), 1, self.scales.stride(0), self.zeros.stride(0)

    def pointers(self) -> tuple[torch.Tensor, ...]:
        weight = self.weight.view(torch.uint8) if self.format == WeightFormat.FP8 else self.weight
        zeros = self.zeros if self.zeros is not None else self.scales
        g_idx = self.g_idx if self.g_idx is not None else self.scales
        return weight, self.scales, zeros, g_idx


def _tiles(m: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K): thin tiles for decode batches, square ones for prefill."""
    if m <= 16:
        return 16, 64, 128
    if m <= 64:
        return 64, 64, 64
    return 128, 128, 32


def dot_precision(x: torch.Tensor) -> str:
    """float32 activations get exact float32 products (Triton would use TF32); 16-bit ones ignore this."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def weight_only_gemm(x: torch.Tensor, weight: PackedWeight, split_k: int | None = None) -> torch.Tensor:
    """x [tokens, in] (contiguous rows) -> [tokens, out] in x's dtype. `split_k` None: chosen here."""
    m, k = x.shape
    n = weight.out_features
    block_m, block_n, block_k = _tiles(m)
    grid_m, grid_n = triton.cdiv(m, block_m), triton.cdiv(n, block_n)
    splits, k_per_split = split.plan(k, block_k, grid_m * grid_n, x.device, split_k)
    out = split.output(x, n, splits)
    stride_wk, stride_wn, stride_sg, stride_zg = weight.strides()
    _weight_only_gemm_kernel[(grid_m, grid_n, splits)](
        x, *weight.pointers(), out, m, n, k, k_per_split,
        x.stride(0), stride_wk, stride_wn, stride_sg, stride_zg, out.stride(0) if splits > 1 else 0, n,
        FORMAT=int(weight.format), BITS=weight.bits, GROUP=weight.group_size,
        ONE_GROUP=weight.one_group_per_tile(block_k), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        DOT=dot_precision(x), num_warps=4, num_stages=3,
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
        FORMAT=int(weight.format), BITS=weight.bits, GROUP=weight.group_size,
        ONE_GROUP=weight.one_group_per_tile(64), BLOCK_N=64, BLOCK_K=64,
    )  # fmt: skip
    return out
