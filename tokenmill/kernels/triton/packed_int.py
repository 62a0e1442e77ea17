"""Unpacking GPTQ-layout int32 words (AWQ's are repacked into it at load) in registers, with no
integer -> float conversion instruction.

A decode GEMM over 4-bit weights turns every weight into a float once per call; at a quarter of the
bytes of bf16, the per-value instruction count decides its speed. So:
- a tile of packed words is loaded once, each word repeated in place along its packed axis
  (`tl.interleave` keeps the copies in the registers of the thread that loaded it) and shifted by a
  broadcast vector of shifts; the data is never permuted;
- an integer below 2^23 OR-ed into the mantissa of float32 2^23 is that float plus the integer (one
  logic op and a bitcast), where I2F runs at a quarter of the ALU rate on Hopper.
The reference is `unpack_sequential` in `tokenmill.quantization.gptq`.
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
def repeat_each(words, TIMES: tl.constexpr):
    """[R, C] -> [R, C * TIMES] (TIMES 4 or 8), each word repeated TIMES times in place."""
    repeated = tl.interleave(words, words)
    repeated = tl.interleave(repeated, repeated)
    if TIMES == 8:
        repeated = tl.interleave(repeated, repeated)
    return repeated


@triton.jit
def unpack_columns(words, BITS: tl.constexpr):
    """Words [R, C], each holding 32/BITS consecutive columns (GPTQ's input rows, read as W's columns),
    -> values [R, C * 32/BITS]."""
    per_word: tl.constexpr = 32 // BITS
    shifts = (tl.arange(0, words.shape[1] * per_word) % per_word) * BITS
    return (repeat_each(words, per_word) >> shifts[None, :]) & ((1 << BITS) - 1)


@triton.jit
def unpack_rows(words, BITS: tl.constexpr):
    """GPTQ's words [R, C], each holding 32/BITS consecutive rows, -> values [R * 32/BITS, C]."""
    per_word: tl.constexpr = 32 // BITS
    repeated = tl.trans(repeat_each(tl.trans(words), per_word))
    shifts = (tl.arange(0, words.shape[0] * per_word) % per_word) * BITS
    return (repeated >> shifts[:, None]) & ((1 << BITS) - 1)


@triton.jit
def zero_points(zero_ptr, group, n, mask, stride_zg, BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr):
    """The zero point of each (group row, column n), as exact float32 [len(group), len(n)]: packed along
    the output columns, plus ZERO_OFFSET (1: GPTQ v1 stores them minus one; 0: AWQ's, as they are)."""
    per_word: tl.constexpr = 32 // BITS
    words = tl.load(zero_ptr + group[:, None] * stride_zg + (n // per_word)[None, :], mask=mask, other=0)
    shifts = ((n % per_word) * BITS)[None, :]
    return offset_float((words >> shifts) & ((1 << BITS) - 1)) - (OFFSET - ZERO_OFFSET)
