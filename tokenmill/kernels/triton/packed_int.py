"""Unpacking AWQ and GPTQ int32 words in registers, with no integer -> float conversion instruction.

A decode GEMM over 4-bit weights turns every weight into a float once per call; at a quarter of the
bytes of bf16, the per-value instruction count decides its speed. Two choices keep it small:
- a tile of packed words is loaded once ([BLOCK_K / 8, BLOCK_N] for GPTQ, [BLOCK_K, BLOCK_N / 8] for
  AWQ) and shifted against a broadcast vector of shifts, then reshaped to [BLOCK_K, BLOCK_N]. AWQ's
  interleaved nibble order is a permutation of that shift vector; the data is never permuted;
- an integer below 2^23 OR-ed into the mantissa of float32 2^23 is that float plus the integer (one
  logic op and a bitcast), where I2F runs at a quarter of the ALU rate on Hopper. Subtracting the zero
  point's float of the same form gives (q - zero) exactly.
The references are `unpack_awq` and `unpack_sequential` in `tokenmill.quantization`.
"""

from __future__ import annotations

import triton
import triton.language as tl

MANTISSA_BITS = tl.constexpr(0x4B000000)  # float32 2^23, whose mantissa holds any integer below 2^23
OFFSET = tl.constexpr(8388608.0)  # 2^23, what `offset_float` adds


@triton.jit
def offset_float(small):
    """int32 values in [0, 2^23) -> float32 2^23 + value, exactly."""
    return (small | MANTISSA_BITS).to(tl.float32, bitcast=True)


@triton.jit
def value_shifts(index, AWQ_ORDER: tl.constexpr, BITS: tl.constexpr):
    """Bit offset of value `index` (0 .. 32/BITS - 1) of a word: sequential for GPTQ; in AWQ's order,
    value j (output column j of its eight) sits in nibble j // 2 + 4 * (j % 2)."""
    if AWQ_ORDER:
        return 4 * ((index >> 1) + 4 * (index & 1))
    return index * BITS


@triton.jit
def unpack_rows(words, BITS: tl.constexpr):
    """GPTQ's words [R, C], each holding 32/BITS consecutive rows, -> values [R * 32/BITS, C]."""
    per_word: tl.constexpr = 32 // BITS
    shifts = value_shifts(tl.arange(0, per_word), False, BITS)
    values = (words[:, None, :] >> shifts[None, :, None]) & ((1 << BITS) - 1)
    return tl.reshape(values, [words.shape[0] * per_word, words.shape[1]])


@triton.jit
def unpack_awq_columns(words):
    """AWQ's words [R, C], each holding eight consecutive columns in its order, -> values [R, 8 * C]."""
    shifts = value_shifts(tl.arange(0, 8), True, 4)
    values = (words[:, :, None] >> shifts[None, None, :]) & 0xF
    return tl.reshape(values, [words.shape[0], words.shape[1] * 8])


@triton.jit
def zero_point_floats(zero_ptr, group, n, mask, stride_zg, AWQ_ORDER: tl.constexpr, BITS: tl.constexpr):
    """2^23 + the zero point of each (group row, column n), as float32 [len(group), len(n)]. Zero points
    are packed along the output columns in both formats; GPTQ (v1) stores them minus one."""
    per_word: tl.constexpr = 32 // BITS
    words = tl.load(zero_ptr + group[:, None] * stride_zg + (n // per_word)[None, :], mask=mask, other=0)
    shifts = value_shifts(n % per_word, AWQ_ORDER, BITS)[None, :]
    zeros = offset_float((words >> shifts) & ((1 << BITS) - 1))
    return zeros if AWQ_ORDER else zeros + 1.0
