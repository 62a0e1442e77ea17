"""The 4-bit decode GEMV on the tensor cores, for 2 to 16 token rows: GPTQ's K-packed words (AWQ is
repacked into them at load) meet the activations in `mma.sync.m16n8k16` (inline PTX, sm_80 and later),
the weight as the A operand (16 outputs by 16 inputs), up to 8 token rows as B, fp32 accumulation.
Reference: the quantization methods' `apply`, with the unfused norm, activation and add around it.

Why: `int4_gemv` decodes every weight once per token row, so its cost grows with the batch; here one
decode serves 8 rows (rows 9-16 take a second block, decoded again): H100, Qwen3-8B, 73 µs a layer at
8 rows against 303. One row stays with `int4_gemv` (60 µs; this kernel took 72 at two rows).

Lane (g, c) of a warp (g = lane // 4, c = lane % 4) owns, in each K step of 128 inputs (16 word rows),
the words of rows c, c + 4, c + 8 and c + 12 for outputs n + 4g .. n + 4g + 3 (one 16-byte load each),
and token g's 8 inputs of each of those rows (token g + 8's too for 16 rows). One LOP3 turns a word's
nibbles i and i + 4 into the half pair (magic + q_i, magic + q_i+4); the activations are paired the
same way (x_i, x_i+4), so both operands of an mma hold the same permutation of 16 stored inputs and
the product is unchanged. Words 2m and 2m + 1 are A rows g and g + 8 of mma block m, so accumulator
2j + p of a lane holds output n + 4g + j of token 2c + p (+ 8 in the second token block).

The epilogue (bias, residual) rounds as the unfused ops do; split K adds the splits in order, as
`gemv_fusion` does. The prologue (RMSNorm or SiLU-and-mul) runs as its own launch before it: in the loop
every lane recomputed its token's activations for its 32 outputs, and the GEMV was bound by instructions
(H100, Qwen3-8B, 8 rows: q|k|v 18.4 against 13.6 µs, down 25.0 against 18.7).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import weight_formats as wf
from tokenmill.kernels.triton.activation import silu_and_mul
from tokenmill.kernels.triton.gemv_fusion import Fusion, split_count, split_scratch, store_row
from tokenmill.kernels.triton.gemv_rows import four_columns
from tokenmill.kernels.triton.norm import rms_norm
from tokenmill.kernels.triton.split_k import num_sms
from tokenmill.kernels.triton.weight_formats import PackedWeight

K_STEP = 128  # inputs per K step: 16 word rows, one group of 128 (or part of a larger one)
WARP_N = 32  # outputs per warp: 8 lane groups of 4 words
WARPS = 4  # warps per program, side by side along N (H100: best of 1, 2 and 4, at 2 programs an SM)
MIN_ROWS = 2  # one row: `int4_gemv` (H100, Qwen3-8B: 60 µs a layer; this GEMV took 72 at two rows)
BLOCK_ROWS = 8  # token rows of one mma block (its N); more rows take a second block
MAX_ROWS = 2 * BLOCK_ROWS
HALVES = (torch.bfloat16, torch.float16)  # the activation dtypes its mma instructions take
_K_STEP, _WARP_N = tl.constexpr(K_STEP), tl.constexpr(WARP_N)  # as the kernels read them


def _word_row_ptx(half: str) -> str:
    """PTX for one word row of a lane and one token block: $8..$11 its four words (outputs n + 4g + j),
    $12..$15 the activation pairs (x_i, x_i+4), $16..$19 each output's pair -(magic + zero point),
    $20..$27 the sums in; $0..$7 the sums out."""
    magic, one = ("0x43004300", "0x3f803f80") if half == "bf16" else ("0x64006400", "0x3c003c00")
    names = [f"a{w}{i}" for w in range(4) for i in range(4)]
    lines = [".reg .b32 s, one, " + ", ".join(names) + ";", f"mov.b32 one, {one};"]
    for w in range(4):
        for i in range(4):
            source = f"${8 + w}"
            if i:
                lines.append(f"shr.u32 s, ${8 + w}, {4 * i};")
                source = "s"
            lines.append(f"lop3.b32 a{w}{i}, {source}, 0x000f000f, {magic}, 0xea;")
            lines.append(f"fma.rn.{half}x2 a{w}{i}, a{w}{i}, one, ${16 + w};")
    mma = f"mma.sync.aligned.m16n8k16.row.col.f32.{half}.{half}.f32"
    for m in (0, 1):
        out = "{" + ", ".join(f"${4 * m + r}" for r in range(4)) + "}"
        sums = "{" + ", ".join(f"${20 + 4 * m + r}" for r in range(4)) + "}"
        for h in (0, 1):
            a = f"{{a{2 * m}{2 * h}, a{2 * m + 1}{2 * h}, a{2 * m}{2 * h + 1}, a{2 * m + 1}{2 * h + 1}}}"
            lines.append(f"{mma} {out}, {a}, {{${12 + 2 * h}, ${13 + 2 * h}}}, {sums if h == 0 else out};")
    return "{\n" + "\n".join(lines) + "\n}"


_BF16_ROW = tl.constexpr(_word_row_ptx("bf16"))
_F16_ROW = tl.constexpr(_word_row_ptx("f16"))
_CONSTRAINTS = tl.constexpr(",".join(["=f"] * 8 + ["r"] * 12 + ["f"] * 8))


@triton.jit
def _half_bits(v):
    """16-bit floats -> their bit patterns in the low half of int32s."""
    return v.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def _activation_pairs(x, T: tl.constexpr):
    """A lane's 8 inputs of one word row, x [T, 8] (16-bit floats) -> the four pairs (x_i, x_i+4) as
    int32s, each [T]."""
    bits = tl.reshape(_half_bits(x), [T, 2, 2, 2])  # (h, m, l) <-> input 4h + 2m + l
    even, odd = tl.split(bits)
    x04, x26 = tl.split(even)
    x15, x37 = tl.split(odd)
    return _pair(x04), _pair(x15), _pair(x26), _pair(x37)


@triton.jit
def _pair(both):
    """[T, 2] 16-bit patterns (x_i, x_i+4) -> [T] int32 holding x_i low, x_i+4 high."""
    low, high = tl.split(both)
    return low | (high << 16)


@triton.jit
def _mma_row(words, x, negated_zeros, d, T: tl.constexpr):
    """d (8 sums, each [T]) plus one word row's products for one token block."""
    w0, w1, w2, w3 = four_columns(words, T)
    p0, p1, p2, p3 = _activation_pairs(x, T)
    z0, z1, z2, z3 = negated_zeros
    operands = [
        w0, w1, w2, w3, p0, p1, p2, p3, z0, z1, z2, z3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    ]  # fmt: skip
    if x.dtype == tl.float16:
        d = tl.inline_asm_elementwise(
            _F16_ROW, _CONSTRAINTS, operands, dtype=[tl.float32] * 8, is_pure=True, pack=1
        )
    else:
        d = tl.inline_asm_elementwise(
            _BF16_ROW, _CONSTRAINTS, operands, dtype=[tl.float32] * 8, is_pure=True, pack=1
        )
    return d


@triton.jit
def _step_loads(w_ptr, zero_ptr, scale_ptr, x0_row, x1_row, step, lane_n, c, stride_wk, stride_sg, stride_zg,
                GROUP: tl.constexpr, TOKEN_BLOCKS: tl.constexpr):  # fmt: skip
    """Everything K step `step` reads: each of the lane's word rows' loads (`_word_row_loads`), and the
    zero-point word [T] and scales [T, 4] of its outputs."""
    first = step * 16 + c  # [T]: the lane's first word row
    x_rows = (x0_row, x1_row)
    rows = (
        _word_row_loads(w_ptr, x_rows, first, lane_n, stride_wk, TOKEN_BLOCKS),
        _word_row_loads(w_ptr, x_rows, first + 4, lane_n, stride_wk, TOKEN_BLOCKS),
        _word_row_loads(w_ptr, x_rows, first + 8, lane_n, stride_wk, TOKEN_BLOCKS),
        _word_row_loads(w_ptr, x_rows, first + 12, lane_n, stride_wk, TOKEN_BLOCKS),
    )
    group = step * _K_STEP // GROUP
    zero_word = tl.load(zero_ptr + group * stride_zg + lane_n // 8)
    scales = tl.load(scale_ptr + group * stride_sg + lane_n[:, None] + tl.arange(0, 4)[None, :])
    return rows, zero_word, scales


@triton.jit
def _word_row_loads(w_ptr, x_rows, row, lane_n, stride_wk, TOKEN_BLOCKS: tl.constexpr):
    """Word row `row` [T]: the lane's four words [T, 4] and each token block's 8 inputs [T, 8]."""
    x0_row, x1_row = x_rows
    word = tl.load(w_ptr + row[:, None] * stride_wk + lane_n[:, None] + tl.arange(0, 4)[None, :])
    k = 8 * row[:, None] + tl.arange(0, 8)[None, :]
    x0 = tl.load(x0_row[:, None] + k)
    x1 = x0
    if TOKEN_BLOCKS == 2:
        x1 = tl.load(x1_row[:, None] + k)
    return word, x0, x1


@triton.jit
def _negated_zero_pairs(zero_word, lane_n, DTYPE: tl.constexpr, ZERO_OFFSET: tl.constexpr):
    """Each of the lane's four outputs' pair -(magic + zero point) as two 16-bit floats in an int32."""
    magic: tl.constexpr = 1024.0 if tl.float16 == DTYPE else 128.0
    return (
        _negated_zero_pair(zero_word, lane_n, 0, magic, DTYPE, ZERO_OFFSET),
        _negated_zero_pair(zero_word, lane_n, 1, magic, DTYPE, ZERO_OFFSET),
        _negated_zero_pair(zero_word, lane_n, 2, magic, DTYPE, ZERO_OFFSET),
        _negated_zero_pair(zero_word, lane_n, 3, magic, DTYPE, ZERO_OFFSET),
    )


@triton.jit
def _negated_zero_pair(zero_word, lane_n, j: tl.constexpr, magic: tl.constexpr, DTYPE: tl.constexpr,
                       ZERO_OFFSET: tl.constexpr):  # fmt: skip
    zero = ((zero_word >> ((lane_n % 8 + j) * 4)) & 15).to(tl.float32) + ZERO_OFFSET
    bits = _half_bits((-(magic + zero)).to(DTYPE))
    return bits | (bits << 16)


@triton.jit
def _finish(sums, out_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr, tile, split, t, token_base, lane_n,
            rows, stride_o, stride_r, SPLIT: tl.constexpr, T: tl.constexpr, HAS_BIAS: tl.constexpr,
            HAS_RESIDUAL: tl.constexpr):  # fmt: skip
    """Store one token block's 8 sums per lane (accumulator 2j + p: output lane_n + j, token token_base
    + p) with the epilogue; under split K the last split of the tile to arrive adds the splits in order."""
    if SPLIT > 1:
        partials = partial_ptr + tile * SPLIT * 8 * T + t
        for a in tl.static_range(8):
            tl.store(partials + (split * 8 + a) * T, sums[a])
        tl.debug_barrier()  # every lane's sums stored before the count releases them
        last = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel") == SPLIT - 1
    else:
        last = True
    if last:
        for a in tl.static_range(8):
            y = sums[a]
            if SPLIT > 1:
                y = tl.zeros([T], tl.float32)
                for s in tl.static_range(SPLIT):
                    y += tl.load(partials + (s * 8 + a) * T, cache_modifier=".cg")
            token = token_base + a % 2
            store_row(y, out_ptr, bias_ptr, residual_ptr, token, lane_n + a // 2, token < rows, stride_o,
                      stride_r, HAS_BIAS, HAS_RESIDUAL)  # fmt: skip
        if SPLIT > 1:
            tl.atomic_xchg(count_ptr + tile, 0)


@triton.jit(do_not_specialize=["rows"])
def _int4_mma_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr, rows,
    steps_per_split, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, ZERO_OFFSET: tl.constexpr,
    GROUP: tl.constexpr, SPLIT: tl.constexpr, TOKEN_BLOCKS: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, WARPS: tl.constexpr,
):  # fmt: skip
    """Program (tile, split): WARPS * WARP_N outputs over `steps_per_split` K steps, each step's loads
    issued a step ahead (the last step reloads itself rather than run past its range)."""
    T: tl.constexpr = 32 * WARPS
    DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    split, tile = pid % SPLIT, pid // SPLIT
    t = tl.arange(0, T)
    g, c = (t % 32) // 4, t % 4
    lane_n = (tile * WARPS + t // 32) * _WARP_N + 4 * g
    x0_row = x_ptr + tl.minimum(g, rows - 1) * stride_x  # lanes past the batch read its last row; their
    x1_row = x_ptr + tl.minimum(g + 8, rows - 1) * stride_x  # sums are not stored
    first = split * steps_per_split
    loaded = _step_loads(w_ptr, zero_ptr, scale_ptr, x0_row, x1_row, first, lane_n, c, stride_wk, stride_sg,
                         stride_zg, GROUP, TOKEN_BLOCKS)  # fmt: skip
    zero = tl.zeros([T], tl.float32)
    acc0 = (zero, zero, zero, zero, zero, zero, zero, zero)
    acc1 = acc0
    for i in range(steps_per_split):
        word_rows, zero_word, scales = loaded
        ahead = first + tl.minimum(i + 1, steps_per_split - 1)
        loaded = _step_loads(w_ptr, zero_ptr, scale_ptr, x0_row, x1_row, ahead, lane_n, c, stride_wk,
                             stride_sg, stride_zg, GROUP, TOKEN_BLOCKS)  # fmt: skip
        negated = _negated_zero_pairs(zero_word, lane_n, DTYPE, ZERO_OFFSET)
        s0, s1, s2, s3 = four_columns(scales.to(tl.float32), T)
        d0 = (zero, zero, zero, zero, zero, zero, zero, zero)
        d1 = d0
        for j in tl.static_range(4):
            word, x0, x1 = word_rows[j]
            d0 = _mma_row(word, x0, negated, d0, T)
            if TOKEN_BLOCKS == 2:
                d1 = _mma_row(word, x1, negated, d1, T)
        acc0 = _scaled_sum(acc0, d0, s0, s1, s2, s3)
        if TOKEN_BLOCKS == 2:
            acc1 = _scaled_sum(acc1, d1, s0, s1, s2, s3)
    block = tile * TOKEN_BLOCKS  # the split sums' and arrival counts' index of the tile's first token block
    _finish(acc0, out_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr, block, split, t, 2 * c, lane_n,
            rows, stride_o, stride_r, SPLIT, T, HAS_BIAS, HAS_RESIDUAL)  # fmt: skip
    if TOKEN_BLOCKS == 2:
        _finish(acc1, out_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr, block + 1, split, t, 8 + 2 * c,
                lane_n, rows, stride_o, stride_r, SPLIT, T, HAS_BIAS, HAS_RESIDUAL)  # fmt: skip


@triton.jit
def _scaled_sum(acc, d, s0, s1, s2, s3):
    """acc + d times each output's group scale (accumulator 2j + p belongs to output j)."""
    return (acc[0] + d[0] * s0, acc[1] + d[1] * s0, acc[2] + d[2] * s1, acc[3] + d[3] * s1,
            acc[4] + d[4] * s2, acc[5] + d[5] * s2, acc[6] + d[6] * s3, acc[7] + d[7] * s3)  # fmt: skip


def supports(x: torch.Tensor, weight: PackedWeight) -> bool:
    """16-bit activations of MIN_ROWS to MAX_ROWS rows on a GPU that runs the inline PTX, and 4-bit weights
    in row-ordered groups of a shape it takes (`takes_shape`)."""
    return (
        x.dtype in HALVES
        and MIN_ROWS <= x.shape[0] <= MAX_ROWS
        and wf.compiles_ptx(x.device)
        and weight.bits == 4
        and weight.groups_in_row_order
        and takes_shape(weight.in_features, weight.out_features, weight.group_size)
    )


def takes_shape(in_features: int, out_features: int, group_size: int) -> bool:
    """Inputs and groups (of input rows) in whole K steps, outputs in whole programs."""
    return group_size % K_STEP == 0 and in_features % K_STEP == 0 and out_features % (WARPS * WARP_N) == 0


def launch_shape(n: int, k: int, sms: int) -> tuple[int, int]:
    """(tiles, splits): programs of WARPS * WARP_N outputs, K split as `gemv_fusion.split_count` splits
    it (a program's split sums of MAX_ROWS rows are those of a tile row there)."""
    tiles = n // (WARPS * WARP_N)
    return tiles, split_count(tiles, k, K_STEP, WARPS * WARP_N, sms)


def gemv(x: torch.Tensor, weight: PackedWeight, fusion: Fusion) -> torch.Tensor:
    """x [tokens, in] (gate|up [tokens, 2 in] under `fusion.silu_mul`) -> [tokens, out] in x's dtype."""
    assert supports(x, weight)
    if fusion.norm is not None:
        x = rms_norm(x, *fusion.norm)[0]
    elif fusion.silu_mul:
        x = silu_and_mul(x)
    if fusion.input_order is not None:  # the prologue's output, gathered into the weight's row order
        x = x.index_select(1, fusion.input_order)
    rows, k, n = x.shape[0], x.shape[1], weight.out_features
    out = x.new_empty(rows, n)
    tiles, split = launch_shape(n, k, num_sms(x.device))
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    stride_wk, _, stride_sg, stride_zg = weight.strides()
    residual = fusion.residual
    _int4_mma_kernel[(tiles * split,)](
        x_ptr=x, w_ptr=w_ptr, scale_ptr=scale_ptr, zero_ptr=zero_ptr, out_ptr=out,
        bias_ptr=x if fusion.bias is None else fusion.bias, residual_ptr=x if residual is None else residual,
        **split_scratch(x.device), rows=rows, steps_per_split=k // K_STEP // split, stride_x=x.stride(0),
        stride_wk=stride_wk, stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        stride_r=0 if residual is None else residual.stride(0), ZERO_OFFSET=weight.zero_offset,
        GROUP=weight.group_size, SPLIT=split, TOKEN_BLOCKS=1 if rows <= BLOCK_ROWS else 2,
        HAS_BIAS=fusion.bias is not None, HAS_RESIDUAL=residual is not None, WARPS=WARPS, num_warps=WARPS,
    )  # fmt: skip
    return out
