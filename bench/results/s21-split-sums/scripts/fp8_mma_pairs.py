"""The one-token e4m3 decode GEMV on the tensor cores (`--quantization fp8`, one scale per output channel):
y = x W^T for one token row, W float8_e4m3fn [out, in], with the fused small-batch path's prologue and
epilogue (`gemv_fusion`). Reference: `Fp8ChannelMethod.apply`, with the unfused norm, activation and add.

Why: `fp8_gemv` converts every weight to fp32 on the CUDA cores (2.5 instructions a weight), which
bounds it on an H200 (gate|up 30 us, 3.3 TB/s). Here each pair of weights takes one conversion to an
f16 pair (`cvt.rn.f16x2.e4m3x2`, sm_89+) and meets the activations, in f16, in `mma.sync.m16n8k16`
with fp32 accumulation: products of an e4m3 and an f16 value are exact, as `fp8_gemv`'s are, so only
the order of the sums differs. H200, Qwen3-8B, one layer's four GEMVs: 62.3 -> 56.0 us; H100 79.8 -> 77.0
(docs/benchmarks.md, bench/results/s19-fp8-mma).

Lane (g, c) of a warp (g = lane // 4, c = lane % 4) owns output rows g and g + 8 of its warp's 16 and,
in each 64-input chunk, the 16 contiguous inputs 16c .. 16c + 15 of both rows (one 16-byte load each).
Both mma operands hold the same permutation of a chunk's inputs (inputs 16c + 4i .. 4i + 3 are mma i's
k pairs (2c, 2c + 1) and (2c + 8, 2c + 9)), so the products are unchanged. The activations are
computed once per program and K step (prologue included), rounded as the unfused ops round them, then
converted to f16 and handed to the lanes through shared memory. Every B column holds the same token, so
each lane's accumulators 0 and 2 are its rows' sums. An activation beyond f16's range (65504) would
overflow: RMSNorm outputs stay within sqrt(in) times the norm weight, and SiLU-and-mul or attention
outputs that large do not occur in the models served.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import weight_formats as wf
from tokenmill.kernels.triton.gemv_fusion import (
    Fusion,
    row_loads,
    row_rstd,
    split_count,
    split_scratch,
    store_row,
)
from tokenmill.kernels.triton.gemv_rows import four_columns, prologue_finish
from tokenmill.kernels.triton.split_k import num_sms

CHUNK = 64  # inputs per chunk: 16 per lane group of 4
K_STEP = 2 * CHUNK  # two chunks per K step (H200: 2 beat 1 and 4)
WARPS = 4  # warps per program, each 16 output rows
BLOCK_N = 16 * WARPS
PROGRAMS_PER_SM = 4  # K split to this many programs per SM (H200: 56.0 us a layer against 64.9 at 2)
_CHUNK, _K_STEP = tl.constexpr(CHUNK), tl.constexpr(K_STEP)  # as the kernels read them


def _chunk_ptx() -> str:
    """One chunk of a lane: $4..$7 row g's words, $8..$11 row g + 8's, $12..$19 the activations as f16
    pairs (inputs 16c + 2m, 16c + 2m + 1 in word m), $20..$23 the sums in; $0..$3 the sums out."""
    lines = [".reg .b16 l, h;", ".reg .b32 p0, p1, q0, q1;"]
    for i in range(4):
        lines += [
            f"mov.b32 {{l, h}}, ${4 + i};",
            "cvt.rn.f16x2.e4m3x2 p0, l;",
            "cvt.rn.f16x2.e4m3x2 p1, h;",
            f"mov.b32 {{l, h}}, ${8 + i};",
            "cvt.rn.f16x2.e4m3x2 q0, l;",
            "cvt.rn.f16x2.e4m3x2 q1, h;",
        ]
        sums = "{$20, $21, $22, $23}" if i == 0 else "{$0, $1, $2, $3}"
        lines.append(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {$0, $1, $2, $3}, {p0, q0, p1, q1}, "
            f"{{${12 + 2 * i}, ${13 + 2 * i}}}, {sums};"
        )
    return "{\n" + "\n".join(lines) + "\n}"


_CHUNK_PTX = tl.constexpr(_chunk_ptx())
_CONSTRAINTS = tl.constexpr(",".join(["=f"] * 4 + ["r"] * 16 + ["f"] * 4))


@triton.jit
def _chunk_mma(row0_words, row1_words, x_low, x_high, d0, d1, d2, d3, T: tl.constexpr):
    """The sums (d0..d3, each [T]) plus one chunk's products: words [T, 4], activation words [T, 4] each."""
    a0, a1, a2, a3 = four_columns(row0_words, T)
    b0, b1, b2, b3 = four_columns(row1_words, T)
    x0, x1, x2, x3 = four_columns(x_low, T)
    x4, x5, x6, x7 = four_columns(x_high, T)
    operands = [a0, a1, a2, a3, b0, b1, b2, b3, x0, x1, x2, x3, x4, x5, x6, x7, d0, d1, d2, d3]
    return tl.inline_asm_elementwise(
        _CHUNK_PTX, _CONSTRAINTS, operands, dtype=[tl.float32] * 4, is_pure=True, pack=1
    )


@triton.jit
def _weight_loads(w_ptr, row0, row1, step, c, stride_w):
    """K step `step`'s words of the lane's rows (stride_w in words): for each chunk, ([T, 4], [T, 4])."""
    word = (step * (_K_STEP // 4) + 4 * c)[:, None] + tl.arange(0, 4)[None, :]
    rows0, rows1 = w_ptr + row0[:, None] * stride_w, w_ptr + row1[:, None] * stride_w
    following = word + _CHUNK // 4
    return (tl.load(rows0 + word), tl.load(rows1 + word)), (
        tl.load(rows0 + following),
        tl.load(rows1 + following),
    )


@triton.jit
def _lane_activations(x, WARPS: tl.constexpr):
    """x [1, K_STEP] fp32 (after the prologue) -> for each chunk, the lane's inputs 16c .. 16c + 15 as f16
    pairs: ((low words [T, 4], high words [T, 4]) of chunk 0, of chunk 1)."""
    bits = x.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    low, high = tl.split(tl.reshape(bits, [_K_STEP // 2, 2]))
    words = tl.reshape(low | (high << 16), [2, 32])  # (chunk, 8c + m)
    chunk0, chunk1 = tl.split(tl.permute(words, (1, 0)))
    return _to_lanes(chunk0, WARPS), _to_lanes(chunk1, WARPS)


@triton.jit
def _pair_loads(xp_ptr, step, c):
    """The lane's inputs of K step `step` from x given as f16 pairs (int32 words, inputs 2j, 2j + 1 in
    word j): for each chunk, (words 16c/2 .. +3, +4 .. +7) [T, 4]."""
    w = (step * (_K_STEP // 2) + 8 * c)[:, None] + tl.arange(0, 4)[None, :]
    return (tl.load(xp_ptr + w), tl.load(xp_ptr + w + 4)), (
        tl.load(xp_ptr + w + _CHUNK // 2), tl.load(xp_ptr + w + _CHUNK // 2 + 4))


@triton.jit
def _to_lanes(words, WARPS: tl.constexpr):
    """[32] words (8c + m) -> (lane's words m = 0..3, m = 4..7), each [T, 4]."""
    T: tl.constexpr = 32 * WARPS
    lanes = tl.reshape(tl.broadcast_to(tl.reshape(words, [1, 1, 4, 8]), [WARPS, 8, 4, 8]), [T, 8])
    low, high = tl.split(tl.permute(tl.reshape(lanes, [T, 2, 4]), (0, 2, 1)))
    return low, high


@triton.jit(do_not_specialize=["steps_per_split"])
def _fp8_mma_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr, K,
    steps_per_split, stride_w, stride_r, eps, SPLIT: tl.constexpr, PROLOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr, WARPS: tl.constexpr,
    PAIRS: tl.constexpr,
):  # fmt: skip
    """Program (tile, split): 16 * WARPS outputs of the token row over `steps_per_split` K steps, each
    step's loads issued a step ahead (the last step reloads itself rather than run past its range)."""
    T: tl.constexpr = 32 * WARPS
    pid = tl.program_id(0)
    split, tile = pid % SPLIT, pid // SPLIT
    t = tl.arange(0, T)
    g, c = (t % 32) // 4, t % 4
    row0 = (tile * WARPS + t // 32) * 16 + g
    row1 = row0 + 8
    first = split * steps_per_split
    k = tl.arange(0, _K_STEP)
    weights = _weight_loads(w_ptr, row0, row1, first, c, stride_w)
    xp = _pair_loads(x_ptr, first, c)
    x, second = row_loads(x_ptr, first * _K_STEP + k, K, norm_weight_ptr, PROLOGUE)
    rstd = row_rstd(x_ptr, K, eps, PROLOGUE, NORM_BLOCK)
    zero = tl.zeros([T], tl.float32)
    d0, d1, d2, d3 = zero, zero, zero, zero
    for i in range(steps_per_split):
        now, x_now, second_now, xp_now = weights, x, second, xp
        ahead = first + tl.minimum(i + 1, steps_per_split - 1)
        weights = _weight_loads(w_ptr, row0, row1, ahead, c, stride_w)
        if PAIRS:
            xp = _pair_loads(x_ptr, ahead, c)
        x, second = row_loads(x_ptr, ahead * _K_STEP + k, K, norm_weight_ptr, PROLOGUE)
        if PAIRS:
            lanes = xp_now
        else:
            lanes = _lane_activations(prologue_finish(x_now, second_now, rstd, PROLOGUE), WARPS)
        for u in tl.static_range(2):
            d0, d1, d2, d3 = _chunk_mma(now[u][0], now[u][1], lanes[u][0], lanes[u][1], d0, d1, d2, d3, T)
    _finish(d0 * tl.load(scale_ptr + row0), d2 * tl.load(scale_ptr + row1), out_ptr, bias_ptr, residual_ptr,
            partial_ptr, count_ptr, tile, split, row0, row1, c == 0, t, stride_r, SPLIT, HAS_BIAS,
            HAS_RESIDUAL, WARPS)  # fmt: skip


@triton.jit
def _finish(y0, y1, out_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr, tile, split, row0, row1, mine, t,
            stride_r, SPLIT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
            WARPS: tl.constexpr):  # fmt: skip
    """Store the sums of rows row0 and row1 (lanes `mine` hold them) with the epilogue; under split K the
    last split of the tile to arrive adds the splits in order."""
    T: tl.constexpr = 32 * WARPS
    if SPLIT > 1:
        partials = partial_ptr + tile * SPLIT * 2 * T + t
        tl.store(partials + split * 2 * T, y0)
        tl.store(partials + (split * 2 + 1) * T, y1)
        tl.debug_barrier()  # every lane's sums stored before the count releases them
        last = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel") == SPLIT - 1
    else:
        last = True
    if last:
        if SPLIT > 1:
            y0 = tl.zeros([T], tl.float32)
            y1 = tl.zeros([T], tl.float32)
            for s in tl.static_range(SPLIT):
                y0 += tl.load(partials + s * 2 * T, cache_modifier=".cg")
                y1 += tl.load(partials + (s * 2 + 1) * T, cache_modifier=".cg")
        store_row(y0, out_ptr, bias_ptr, residual_ptr, 0, row0, mine, 0, stride_r, HAS_BIAS, HAS_RESIDUAL)
        store_row(y1, out_ptr, bias_ptr, residual_ptr, 0, row1, mine, 0, stride_r, HAS_BIAS, HAS_RESIDUAL)
        if SPLIT > 1:
            tl.atomic_xchg(count_ptr + tile, 0)


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """One 16-bit token row on a GPU with fp8 conversions (sm_89+) that runs the inline PTX, and a weight
    of whole programs of outputs and whole K steps of inputs, its rows 16-byte aligned."""
    return (
        x.shape[0] == 1
        and x.dtype in (torch.bfloat16, torch.float16)
        and wf.compiles_ptx(x.device)
        and wf.native_fp8(x.device)
        and weight.shape[0] % BLOCK_N == 0
        and weight.shape[1] % K_STEP == 0
        and weight.stride(1) == 1
        and weight.stride(0) % 16 == 0
        and weight.data_ptr() % 16 == 0
    )


def launch_shape(n: int, k: int, sms: int) -> tuple[int, int]:
    """(tiles, splits): programs of BLOCK_N outputs, K split to PROGRAMS_PER_SM programs per SM (each
    split whole K steps, its sums within `gemv_fusion`'s scratch)."""
    tiles = n // BLOCK_N
    import tokenmill.kernels.triton.gemv_fusion as gf
    old = gf.SPLIT_PROGRAMS_PER_SM
    gf.SPLIT_PROGRAMS_PER_SM = PROGRAMS_PER_SM
    try:
        return tiles, split_count(tiles, k, K_STEP, BLOCK_N, sms)
    finally:
        gf.SPLIT_PROGRAMS_PER_SM = old


def gemv(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, fusion: Fusion, pairs=None) -> torch.Tensor:
    """x [1, in] (gate|up [1, 2 in] under `fusion.silu_mul`) times an e4m3 weight [out, in] with
    per-output `scales` -> [1, out] in x's dtype."""
    k, n = weight.shape[1], weight.shape[0]
    if pairs is not None:
        fusion = Fusion(bias=fusion.bias, residual=fusion.residual)
    assert weight.shape[1] == k, f"the weight takes {weight.shape[1]} inputs, x gives {k}"
    out = x.new_empty(1, n)
    tiles, split = launch_shape(n, k, num_sms(x.device))
    _fp8_mma_kernel[(tiles * split,)](
        x_ptr=x if pairs is None else pairs, w_ptr=weight.view(torch.int32), scale_ptr=scales, out_ptr=out, **split_scratch(x.device),
        K=k, steps_per_split=k // K_STEP // split, stride_w=weight.stride(0) // 4, **fusion.kernel_args(x),
        SPLIT=split, WARPS=WARPS, PAIRS=pairs is not None, num_warps=WARPS,
    )  # fmt: skip
    return out
