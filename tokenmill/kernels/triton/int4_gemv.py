"""The 4-bit decode GEMV (GPTQ's K-packed words; AWQ is repacked into them at load) for groups of 128·m
rows in row order: y = x W^T for one to a few token rows, with the fused small-batch path's prologue and
epilogue (`gemv_fusion`). Reference: the quantization methods' `apply` (x times the dequantized weight).

`quant_gemv`'s packed kernel unpacks each weight to fp32 on its own (about 8 instructions a weight on an
H100) and runs one long K loop per output tile: Qwen3-8B's projections ran at 0.5-1.0 TB/s of their
bytes, slower than bf16. Two changes make the bytes the limit again:
- each int32 word meets its 8 activations in bf16x2 arithmetic (inline PTX, sm_80 and later): one LOP3
  turns two nibbles into the bf16 pair (128 + q, 128 + q'), an FMA takes off 128 + zero point (exact),
  and four FMAs multiply-accumulate the pairs with the activation pairs, so about 2.6 instructions a
  weight; each word's sum continues in fp32, times its group's scale. The products and each word's sum
  round to bf16, fp16 activations too (0.3-0.6% of an output's range from the fp32 sums on random
  weights; fp16 arithmetic would be finer for fp16 models but overflows four products past ~1000).
- K is split (`gemv_fusion.split_count`) so that a projection runs several programs per SM, the last
  split of each output tile adding the splits in order (`gemv_fusion.store_split_row`), and each
  program issues the loads of its next K step (words, zero points, scales, activations) before it
  computes the current one, so a program keeps two steps' bytes in flight.
A K step is one chunk of 128 inputs (16 word rows), or two where each program keeps enough steps to pay
for the per-step work a wider tile shares (`launch_shape`). Measured with ncu on an H200, the kernel
issues about 4.4 instructions a weight at 57% of the issue slots: it is bound by instructions and
latency together, not by DRAM (36% of it on Qwen3-8B's gate|up).
The portable path (Triton's interpreter, fp32 activations, GPUs before sm_80) computes the same sums in
fp32 with plain Triton.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import weight_formats as wf
from tokenmill.kernels.triton.gemv_fusion import (
    MAX_ROWS,
    Fusion,
    row_loads,
    row_rstd,
    split_count,
    split_program,
    split_scratch,
    store_split_row,
)
from tokenmill.kernels.triton.gemv_rows import four_columns, prologue_finish
from tokenmill.kernels.triton.packed_int import zero_points
from tokenmill.kernels.triton.split_k import num_sms
from tokenmill.kernels.triton.weight_formats import PackedWeight

BLOCK_K = 128  # input rows per chunk: one group (of 128, or an eighth... of a larger one)
BLOCK_N = 64  # output columns per program (H100 sweep: 64 beat 16, 32 and 128 on Qwen3-8B)

# Two nibbles of a word (bits 4i..4i+3 and 16+4i..) OR-ed into bf16 128.0 are the pair (128 + q_i,
# 128 + q_{i+4}); $2 holds -(128 + zero) twice, $3..$6 the activation pairs (x_i, x_{i+4}), i = 0..3.
_BF16X2_WORD_SUM = tl.constexpr("""
{
.reg .b32 t0, t1, t2, t3, w4, w8, w12, acc, one;
.reg .b16 l16, h16;
.reg .f32 lo, hi;
mov.b32 one, 0x3f803f80;
shr.u32 w4, $1, 4;
shr.u32 w8, $1, 8;
shr.u32 w12, $1, 12;
lop3.b32 t0, $1, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t1, w4, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t2, w8, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t3, w12, 0x000f000f, 0x43004300, 0xea;
fma.rn.bf16x2 t0, t0, one, $2;
fma.rn.bf16x2 t1, t1, one, $2;
fma.rn.bf16x2 t2, t2, one, $2;
fma.rn.bf16x2 t3, t3, one, $2;
mov.b32 acc, 0x80008000;
fma.rn.bf16x2 acc, t0, $3, acc;
fma.rn.bf16x2 acc, t1, $4, acc;
fma.rn.bf16x2 acc, t2, $5, acc;
fma.rn.bf16x2 acc, t3, $6, acc;
mov.b32 {l16, h16}, acc;
cvt.f32.bf16 lo, l16;
cvt.f32.bf16 hi, h16;
add.f32 $0, lo, hi;
}
""")


@triton.jit
def _bf16_bits(x):
    """fp32 -> the bit pattern of its bf16 rounding, in the low half of an int32."""
    return x.to(tl.bfloat16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def _nibble_term(words, i: tl.constexpr, zeros, x):
    """(q_i - zero) * x for the i-th nibble of each word, x that word row's activation."""
    return (((words >> (4 * i)) & 15).to(tl.float32) - zeros) * x


@triton.jit
def _pair_columns(t, GROUPS: tl.constexpr, WORD_ROWS: tl.constexpr):
    """[GROUPS, WORD_ROWS, 4] -> its four columns, each [GROUPS, WORD_ROWS, 1] (broadcast along the
    outputs)."""
    c0, c1, c2, c3 = four_columns(tl.reshape(t, [GROUPS * WORD_ROWS, 4]), GROUPS * WORD_ROWS)
    shape: tl.constexpr = [GROUPS, WORD_ROWS, 1]
    return tl.reshape(c0, shape), tl.reshape(c1, shape), tl.reshape(c2, shape), tl.reshape(c3, shape)


@triton.jit
def _word_sums(words, zeros, lo, hi, GROUPS: tl.constexpr, WORD_ROWS: tl.constexpr, USE_ASM: tl.constexpr):
    """[GROUPS, WORD_ROWS, BLOCK_N] sums over each word's 8 weights of (q - zero) * x, where lo / hi
    [GROUPS, WORD_ROWS, 4] hold the activations of the word's rows i and i + 4 and zeros [GROUPS, 1,
    BLOCK_N] the zero points of each group."""
    if USE_ASM:
        neg = _bf16_bits(-(128.0 + zeros))
        p0, p1, p2, p3 = _pair_columns(_bf16_bits(lo) | (_bf16_bits(hi) << 16), GROUPS, WORD_ROWS)
        shape: tl.constexpr = words.shape
        sums = tl.inline_asm_elementwise(
            _BF16X2_WORD_SUM, "=r,r,r,r,r,r,r",
            [words, tl.broadcast_to(neg | (neg << 16), shape), tl.broadcast_to(p0, shape),
             tl.broadcast_to(p1, shape), tl.broadcast_to(p2, shape), tl.broadcast_to(p3, shape)],
            dtype=tl.float32, is_pure=True, pack=1,
        )  # fmt: skip
    else:
        x0, x1, x2, x3 = _pair_columns(lo, GROUPS, WORD_ROWS)
        x4, x5, x6, x7 = _pair_columns(hi, GROUPS, WORD_ROWS)
        sums = _nibble_term(words, 0, zeros, x0) + _nibble_term(words, 1, zeros, x1)
        sums += _nibble_term(words, 2, zeros, x2) + _nibble_term(words, 3, zeros, x3)
        sums += _nibble_term(words, 4, zeros, x4) + _nibble_term(words, 5, zeros, x5)
        sums += _nibble_term(words, 6, zeros, x6) + _nibble_term(words, 7, zeros, x7)
    return sums


@triton.jit
def _k_step_loads(w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr, order_ptr, k0, K, n, n_mask,
                  stride_wk, stride_zg, stride_sg, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
                  PROLOGUE: tl.constexpr, GATHER: tl.constexpr, GROUPS: tl.constexpr,
                  BLOCK_K: tl.constexpr):  # fmt: skip
    """Everything one K step from k0 (GROUPS chunks of BLOCK_K inputs) reads: its words [GROUPS,
    BLOCK_K / 8, BLOCK_N], each chunk's zero points and scales [GROUPS, 1, BLOCK_N], and the prologue's
    loads of its activations."""
    chunk = k0 + tl.arange(0, GROUPS) * BLOCK_K
    word_rows = (chunk // 8)[:, None, None] + tl.arange(0, BLOCK_K // 8)[None, :, None]
    words = tl.load(w_ptr + word_rows * stride_wk + n[None, None, :], mask=n_mask[None, None, :], other=0)
    group = chunk // GROUP
    zeros = zero_points(zero_ptr, group, n, n_mask[None, :], stride_zg, 4, ZERO_OFFSET)
    scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=n_mask[None, :], other=0.0)
    k = k0 + tl.arange(0, GROUPS * BLOCK_K)
    x, second = row_loads(x_row, k, K, norm_weight_ptr, order_ptr, PROLOGUE, GATHER)
    return words, zeros[:, None, :], scales[:, None, :], x, second


@triton.jit
def _k_step(acc, loaded, rstd, GROUPS: tl.constexpr, BLOCK_K: tl.constexpr, PROLOGUE: tl.constexpr,
            USE_ASM: tl.constexpr):  # fmt: skip
    """acc [GROUPS, BLOCK_K / 8, BLOCK_N] plus one K step's scaled word sums."""
    WORD_ROWS: tl.constexpr = BLOCK_K // 8
    words, zeros, scales, x, second = loaded
    x = prologue_finish(x, second, rstd, PROLOGUE)
    pairs = tl.permute(tl.reshape(x, [GROUPS, WORD_ROWS, 2, 4]), (0, 1, 3, 2))
    lo, hi = tl.split(pairs)  # the inputs 8w + i and 8w + 4 + i of each word w
    return acc + _word_sums(words, zeros, lo, hi, GROUPS, WORD_ROWS, USE_ASM) * scales.to(tl.float32)


@triton.jit(do_not_specialize=["rows"])
def _int4_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, partial_ptr,
    count_ptr, order_ptr, rows, N, K, k_per_split, stride_x, stride_wk, stride_sg, stride_zg, stride_o,
    stride_r, eps, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, GROUPS: tl.constexpr, USE_ASM: tl.constexpr, PROLOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr, GATHER: tl.constexpr,
):  # fmt: skip
    """Program (tile, row, split): BLOCK_N outputs of one token row over K rows [split * k_per_split, ...),
    GROUPS chunks of BLOCK_K a K step, each step's loads issued a step ahead (the last step reloads
    itself rather than run past the split's end)."""
    STEP: tl.constexpr = GROUPS * BLOCK_K
    split, tile_row, row, n, k_start, k_end = split_program(rows, K, k_per_split, SPLIT, BLOCK_N)
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    loaded = _k_step_loads(
        w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr, order_ptr, k_start, K, n, n_mask, stride_wk,
        stride_zg, stride_sg, ZERO_OFFSET, GROUP, PROLOGUE, GATHER, GROUPS, BLOCK_K,
    )  # fmt: skip
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([GROUPS, BLOCK_K // 8, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, STEP):
        current = loaded
        loaded = _k_step_loads(
            w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr, order_ptr,
            tl.minimum(k0 + STEP, k_end - STEP), K, n, n_mask, stride_wk, stride_zg, stride_sg, ZERO_OFFSET,
            GROUP, PROLOGUE, GATHER, GROUPS, BLOCK_K,
        )  # fmt: skip
        acc = _k_step(acc, current, rstd, GROUPS, BLOCK_K, PROLOGUE, USE_ASM)
    store_split_row(
        tl.sum(tl.sum(acc, 1), 0), out_ptr, partial_ptr, count_ptr, tile_row, split, bias_ptr, residual_ptr,
        row, n, n_mask, stride_o, stride_r, SPLIT, BLOCK_N, HAS_BIAS, HAS_RESIDUAL,
    )  # fmt: skip


def supports(weight: PackedWeight) -> bool:
    """4-bit weights whose groups (a multiple of BLOCK_K rows) follow the row order."""
    return (
        weight.bits == 4
        and weight.groups_in_row_order
        and weight.group_size % BLOCK_K == 0
        and weight.in_features % BLOCK_K == 0
    )


def _uses_asm(x: torch.Tensor) -> bool:
    return x.dtype in (torch.bfloat16, torch.float16) and wf.compiles_ptx(x.device)


@dataclass(frozen=True)
class Int4Shape:
    """One launch shape: BLOCK_N outputs a program, `groups` chunks of BLOCK_K inputs a K step."""

    block_n: int = BLOCK_N
    groups: int = 1


WIDE_SHAPE = Int4Shape(groups=2)
MIN_WIDE_STEPS = 6  # wide steps a program must keep to pay for its fixed part (RMSNorm factor, split sum)


def launch_shape(n: int, k: int, sms: int) -> Int4Shape:
    """WIDE_SHAPE where each program (K split as `split_count` splits it) keeps MIN_WIDE_STEPS wide steps
    or more. Wide steps made Qwen3-8B's gate|up (16 of them) 7% faster on an H200 and 5% on an H100,
    down (6 a split) 4% and 0%; q|k|v (4) 10% and o (2) 17% slower (H200; docs/benchmarks.md,
    2026-11-24, seventeenth session)."""
    step = WIDE_SHAPE.groups * BLOCK_K
    if k % step:
        return Int4Shape()
    split = split_count(triton.cdiv(n, WIDE_SHAPE.block_n), k, step, WIDE_SHAPE.block_n, sms)
    return WIDE_SHAPE if k // (split * step) >= MIN_WIDE_STEPS else Int4Shape()


def gemv(
    x: torch.Tensor, weight: PackedWeight, fusion: Fusion, shape: Int4Shape | None = None
) -> torch.Tensor:
    """x [tokens, in] (gate|up [tokens, 2 in] under `fusion.silu_mul`) -> [tokens, out] in x's dtype;
    `shape` None: `launch_shape`."""
    assert supports(weight)
    rows, k, n = x.shape[0], fusion.in_features(x), weight.out_features
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    sms = num_sms(x.device)
    shape = shape or launch_shape(n, k, sms)
    step = shape.groups * BLOCK_K
    tiles = triton.cdiv(n, shape.block_n)
    split = split_count(tiles, k, step, shape.block_n, sms) if rows <= MAX_ROWS else 1
    assert k % (split * step) == 0, "the look-ahead needs whole K steps in every split"
    k_per_split = k // split
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _int4_gemv_kernel[(tiles * rows * split,)](
        x_ptr=x, w_ptr=w_ptr, scale_ptr=scale_ptr, zero_ptr=zero_ptr, out_ptr=out,
        **split_scratch(x.device), rows=rows, N=n, K=k, k_per_split=k_per_split, stride_x=x.stride(0),
        stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        **fusion.kernel_args(x), **fusion.gather_args(x), ZERO_OFFSET=weight.zero_offset,
        GROUP=weight.group_size, SPLIT=split,
        BLOCK_N=shape.block_n, BLOCK_K=BLOCK_K, GROUPS=shape.groups, USE_ASM=_uses_asm(x), num_warps=4,
    )  # fmt: skip
    return out
