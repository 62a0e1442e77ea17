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
The portable path (Triton's interpreter, fp32 activations, GPUs before sm_80) computes the same sums in
fp32 with plain Triton.
"""

from __future__ import annotations

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

BLOCK_K = 128  # input rows per K step: one group (of 128, or an eighth... of a larger one)
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
    """(q_i - zero) * x for the i-th nibble of each word, x [word rows] that row's activation."""
    return (((words >> (4 * i)) & 15).to(tl.float32) - zeros) * x[:, None]


@triton.jit
def _word_sums(words, zeros, lo, hi, WORD_ROWS: tl.constexpr, BLOCK_N: tl.constexpr, USE_ASM: tl.constexpr):
    """[word rows, BLOCK_N] sums over each word's 8 weights of (q - zero) * x, where lo / hi [word rows,
    4] hold the activations of the word's rows i and i + 4 and zeros [1, BLOCK_N] the zero points."""
    if USE_ASM:
        neg = _bf16_bits(-(128.0 + zeros))
        p0, p1, p2, p3 = four_columns(_bf16_bits(lo) | (_bf16_bits(hi) << 16), WORD_ROWS)
        shape: tl.constexpr = [WORD_ROWS, BLOCK_N]
        sums = tl.inline_asm_elementwise(
            _BF16X2_WORD_SUM, "=r,r,r,r,r,r,r",
            [words, tl.broadcast_to(neg | (neg << 16), shape), tl.broadcast_to(p0[:, None], shape),
             tl.broadcast_to(p1[:, None], shape), tl.broadcast_to(p2[:, None], shape),
             tl.broadcast_to(p3[:, None], shape)],
            dtype=tl.float32, is_pure=True, pack=1,
        )  # fmt: skip
    else:
        x0, x1, x2, x3 = four_columns(lo, WORD_ROWS)
        x4, x5, x6, x7 = four_columns(hi, WORD_ROWS)
        sums = _nibble_term(words, 0, zeros, x0) + _nibble_term(words, 1, zeros, x1)
        sums += _nibble_term(words, 2, zeros, x2) + _nibble_term(words, 3, zeros, x3)
        sums += _nibble_term(words, 4, zeros, x4) + _nibble_term(words, 5, zeros, x5)
        sums += _nibble_term(words, 6, zeros, x6) + _nibble_term(words, 7, zeros, x7)
    return sums


@triton.jit
def _k_step_loads(w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr, k0, K, n, n_mask, stride_wk, stride_zg,
                  stride_sg, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, PROLOGUE: tl.constexpr,
                  BLOCK_K: tl.constexpr):  # fmt: skip
    """Everything one K step from k0 reads: its words, its group's zero points and scales, and the
    prologue's loads of its activations."""
    word_rows = k0 // 8 + tl.arange(0, BLOCK_K // 8)
    words = tl.load(w_ptr + word_rows[:, None] * stride_wk + n[None, :], mask=n_mask, other=0)
    group = tl.zeros([1], tl.int32) + k0 // GROUP
    zeros = zero_points(zero_ptr, group, n, n_mask, stride_zg, 4, ZERO_OFFSET)
    scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=n_mask, other=0.0)
    x, second = row_loads(x_row, k0 + tl.arange(0, BLOCK_K), K, norm_weight_ptr, PROLOGUE)
    return words, zeros, scales, x, second


@triton.jit(do_not_specialize=["rows"])
def _int4_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, partial_ptr,
    count_ptr, rows, N, K, k_per_split, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, USE_ASM: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):  # fmt: skip
    """Program (tile, row, split): BLOCK_N outputs of one token row over K rows [split * k_per_split, ...),
    each K step's loads issued one step ahead (the last step reloads itself rather than run past K)."""
    WORD_ROWS: tl.constexpr = BLOCK_K // 8
    split, tile_row, row, n, k_start, k_end = split_program(rows, K, k_per_split, SPLIT, BLOCK_N)
    n_mask = (n < N)[None, :]
    x_row = x_ptr + row * stride_x
    loaded = _k_step_loads(
        w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr, k_start, K, n, n_mask, stride_wk, stride_zg,
        stride_sg, ZERO_OFFSET, GROUP, PROLOGUE, BLOCK_K,
    )  # fmt: skip
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([WORD_ROWS, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        words, zeros, scales, x, second = loaded
        loaded = _k_step_loads(
            w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr, tl.minimum(k0 + BLOCK_K, k_end - BLOCK_K), K,
            n, n_mask, stride_wk, stride_zg, stride_sg, ZERO_OFFSET, GROUP, PROLOGUE, BLOCK_K,
        )  # fmt: skip
        x = prologue_finish(x, second, rstd, PROLOGUE)
        lo, hi = tl.split(tl.permute(tl.reshape(x, [WORD_ROWS, 2, 4]), (0, 2, 1)))  # rows 8w+i, 8w+4+i
        acc += _word_sums(words, zeros, lo, hi, WORD_ROWS, BLOCK_N, USE_ASM) * scales.to(tl.float32)
    store_split_row(
        tl.sum(acc, 0), out_ptr, partial_ptr, count_ptr, tile_row, split, bias_ptr, residual_ptr, row, n,
        n < N, stride_o, stride_r, SPLIT, BLOCK_N, HAS_BIAS, HAS_RESIDUAL,
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


def gemv(x: torch.Tensor, weight: PackedWeight, fusion: Fusion) -> torch.Tensor:
    """x [tokens, in] (gate|up [tokens, 2 in] under `fusion.silu_mul`) -> [tokens, out] in x's dtype."""
    assert supports(weight)
    rows, k, n = x.shape[0], fusion.in_features(x), weight.out_features
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    tiles = triton.cdiv(n, BLOCK_N)
    split = split_count(tiles, k, BLOCK_K, BLOCK_N, num_sms(x.device)) if rows <= MAX_ROWS else 1
    assert k % (split * BLOCK_K) == 0, "the look-ahead needs whole K steps in every split"
    k_per_split = k // split
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _int4_gemv_kernel[(tiles * rows * split,)](
        x_ptr=x, w_ptr=w_ptr, scale_ptr=scale_ptr, zero_ptr=zero_ptr, out_ptr=out,
        **split_scratch(x.device), rows=rows, N=n, K=k, k_per_split=k_per_split, stride_x=x.stride(0),
        stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        **fusion.kernel_args(x), ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size, SPLIT=split,
        BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, USE_ASM=_uses_asm(x), num_warps=4,
    )  # fmt: skip
    return out
