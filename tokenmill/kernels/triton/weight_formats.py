"""How the weight-only formats store their weights, and the Triton helpers that read them back: the
dequantize-GEMM (`weight_only_gemm`) and the decode GEMVs (`quant_gemv`, `fp8_gemv`, `int4_gemv`) share them.

- INT8: int8 [out, in] with one scale per output channel (W8A16, `--quantization int8`);
- FP8: float8_e4m3fn [out, in] with one scale per output channel (`--quantization fp8`);
- GPTQ: 4- or 8-bit values packed along the input rows, [in*bits/32, out], zero points packed along the
  output columns (GPTQ v1 stores them minus one), the group of each input row named by `g_idx`
  (act-order included). AWQ checkpoints are repacked into this layout at load (`AwqMethod`), their
  zero points as they are: so each thread's word holds one output column's consecutive input rows.
Packed words are unpacked as `packed_int` describes, with no int -> float conversion.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from enum import IntEnum

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.packed_int import OFFSET, offset_float, unpack_rows, zero_points


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
