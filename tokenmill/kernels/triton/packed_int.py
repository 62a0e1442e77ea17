"""Unpacking AWQ and GPTQ int32 words in registers, with no integer -> float conversion instruction.

A decode GEMM over 4-bit weights turns every weight into a float once per call; at a quarter of the
bytes of bf16, the per-value instruction count decides its speed. So:
- a tile of packed words is loaded once ([BLOCK_K / 8, BLOCK_N] for GPTQ, [BLOCK_K, BLOCK_N / 8] for
  AWQ), each word repeated in place along its packed axis (`tl.interleave` keeps the copies in the
  registers of the thread that loaded it) and shifted by a broadcast vector of shifts. AWQ's interleaved
  nibble order is a permutation of that shift vector; the data is never permuted;
- an integer below 2^23 OR-ed into the mantissa of float32 2^23 is that float plus the integer (one
  logic op and a bitcast), where I2F runs at a quarter of the ALU rate on Hopper;
- likewise an integer below 128 OR-ed into bf16 128.0 (below 1024 into fp16 1024.0) is a 16-bit weight
  the tensor cores take as it is (`HALF_MAGIC`): the GEMM then subtracts (offset + zero point) times
  the sum of the activations once per output, instead of once per weight.
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
def repeat_each(words, TIMES: tl.constexpr):
    """[R, C] -> [R, C * TIMES] (TIMES 4 or 8), each word repeated TIMES times in place."""
    repeated = tl.interleave(words, words)
    repeated = tl.interleave(repeated, repeated)
    if TIMES == 8:
        repeated = tl.interleave(repeated, repeated)
    return repeated


@triton.jit
def unpack_rows(words, BITS: tl.constexpr):
    """GPTQ's words [R, C], each holding 32/BITS consecutive rows, -> values [R * 32/BITS, C]."""
    per_word: tl.constexpr = 32 // BITS
    repeated = tl.trans(repeat_each(tl.trans(words), per_word))
    shifts = value_shifts(tl.arange(0, words.shape[0] * per_word) % per_word, False, BITS)
    return (repeated >> shifts[:, None]) & ((1 << BITS) - 1)


@triton.jit
def unpack_awq_columns(words):
    """AWQ's words [R, C], each holding eight consecutive columns in its order, -> values [R, 8 * C]."""
    shifts = value_shifts(tl.arange(0, words.shape[1] * 8) % 8, True, 4)
    return (repeat_each(words, 8) >> shifts[None, :]) & 0xF


@triton.jit
def as_half_offset(values, HALF_MAGIC: tl.constexpr, dtype: tl.constexpr):
    """int32 values below 128 (bf16) or 1024 (fp16) -> `dtype` (16-bit) values offset + value, exactly,
    where HALF_MAGIC is the bit pattern of the offset (bf16 128.0 or fp16 1024.0) in that dtype."""
    return (values | HALF_MAGIC).to(tl.int16).to(dtype, bitcast=True)


@triton.jit
def zero_points(zero_ptr, group, n, mask, stride_zg, AWQ_ORDER: tl.constexpr, BITS: tl.constexpr):
    """The zero point of each (group row, column n), as exact float32 [len(group), len(n)]. Zero points
    are packed along the output columns in both formats; GPTQ (v1) stores them minus one."""
    per_word: tl.constexpr = 32 // BITS
    words = tl.load(zero_ptr + group[:, None] * stride_zg + (n // per_word)[None, :], mask=mask, other=0)
    shifts = value_shifts(n % per_word, AWQ_ORDER, BITS)[None, :]
    zeros = offset_float((words >> shifts) & ((1 << BITS) - 1)) - OFFSET
    return zeros if AWQ_ORDER else zeros + 1.0
