"""Prototype: the 4-bit decode GEMV on the tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate),
reading GPTQ's K-packed words as they are stored.

Lane (g, c) of a warp (g = lane // 4, c = lane % 4) loads four consecutive words of one word row
r (outputs n + 4g .. n + 4g + 3, inputs 8r .. 8r + 7) and its token g's eight activations of the same
inputs. Two of its words form the A fragment of one mma (rows g, g + 8 <-> two adjacent outputs), the
nibble pairs (i, i + 4) that one LOP3 turns into bf16 (128 + q, 128 + q') being the fragment's k pairs;
the activations are paired the same way (x_i, x_{i+4}) with a PRMT. The logical K of each mma is a
permutation of 16 stored inputs: A and B agree on it, so the sum is the product.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.gemv_rows import four_columns

TILE_N = tl.constexpr(32)  # outputs per warp: 8 lane groups x 4 words


def _unpack_word(word: int) -> str:
    """PTX turning word operand $<8 + word> into registers a<word>0..3: its nibble pairs (i, i + 4) as
    bf16 (128 + q, 128 + q')."""
    lines = [f"lop3.b32 a{word}0, ${8 + word}, 0x000f000f, 0x43004300, 0xea;"]
    for i in (1, 2, 3):
        lines.append(f"shr.u32 s, ${8 + word}, {4 * i};")
        lines.append(f"lop3.b32 a{word}{i}, s, 0x000f000f, 0x43004300, 0xea;")
    return "\n".join(lines)


def _subtract_zero(word: int) -> str:
    """PTX taking the word's 128 + zero point (the pair in operand $<16 + word>) off a<word>0..3."""
    return "\n".join(f"fma.rn.bf16x2 a{word}{i}, a{word}{i}, one, ${16 + word};" for i in range(4))


_MMA = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
# $8..$11 words (outputs n + 0..3), $12..$15 activation pairs (x0, x1) .. (x6, x7), $16..$19 -(128 + zero)
# pairs, $20..$27 the sums in; $0..$7 the sums out (two mma blocks: words 0, 1 and 2, 3)
_MMA_STEP = tl.constexpr(
    "\n{\n.reg .b32 xb0, xb1, xb2, xb3, one, s;\n"
    ".reg .b32 a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33;\n"
    "mov.b32 one, 0x3f803f80;\n"
    "prmt.b32 xb0, $12, $14, 0x5410;\nprmt.b32 xb1, $12, $14, 0x7632;\n"
    "prmt.b32 xb2, $13, $15, 0x5410;\nprmt.b32 xb3, $13, $15, 0x7632;\n"
    + "\n".join(_unpack_word(w) for w in range(4)) + "\n"
    + "\n".join(_subtract_zero(w) for w in range(4)) + "\n"
    f"{_MMA} {{$0, $1, $2, $3}}, {{a00, a10, a01, a11}}, {{xb0, xb1}}, {{$20, $21, $22, $23}};\n"
    f"{_MMA} {{$0, $1, $2, $3}}, {{a02, a12, a03, a13}}, {{xb2, xb3}}, {{$0, $1, $2, $3}};\n"
    f"{_MMA} {{$4, $5, $6, $7}}, {{a20, a30, a21, a31}}, {{xb0, xb1}}, {{$24, $25, $26, $27}};\n"
    f"{_MMA} {{$4, $5, $6, $7}}, {{a22, a32, a23, a33}}, {{xb2, xb3}}, {{$4, $5, $6, $7}};\n}}\n"
)


_CONSTRAINTS = tl.constexpr(",".join(["=f"] * 8 + ["r"] * 12 + ["f"] * 8))


@triton.jit
def _bf16_pair(v):
    bits = v.to(tl.bfloat16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return bits | (bits << 16)


@triton.jit
def _group_loads(w_ptr, x32_ptr, zero_ptr, scale_ptr, group, lane_n, c, token, stride_wk, stride_x32,
                 stride_sg, stride_zg, groups, ZERO_OFFSET: tl.constexpr, BLOCKED: tl.constexpr):  # fmt: skip
    """A group's words (4 x [T, 4]: a lane's 4 of its 16 word rows), activation pairs (4 x [T, 4]), zero points and scales
    ([T, 4]) of each lane's four outputs. N is a multiple of TILE_N (no masks); lanes past the batch
    read the last row (their products land in columns nobody stores)."""
    n = lane_n[:, None] + tl.arange(0, 4)[None, :]
    rows0 = group * 16 + c  # [T]: this lane's first word row of the group
    if BLOCKED:  # [N / 32][groups][16 word rows][32 outputs]
        w = w_ptr + ((n // 32) * groups + group[:, None]) * 512 + c[:, None] * 32 + n % 32
        step = 128
    else:
        w = w_ptr + rows0[:, None] * stride_wk + n
        step = 4 * stride_wk
    w0 = tl.load(w)
    w1 = tl.load(w + step)
    w2 = tl.load(w + 2 * step)
    w3 = tl.load(w + 3 * step)
    xs = x32_ptr + token[:, None] * stride_x32 + 4 * rows0[:, None] + tl.arange(0, 4)[None, :]
    x0 = tl.load(xs)
    x1 = tl.load(xs + 16)
    x2 = tl.load(xs + 32)
    x3 = tl.load(xs + 48)
    zero_words = tl.load(zero_ptr + group[:, None] * stride_zg + n // 8)
    zeros = ((zero_words >> ((n % 8) * 4)) & 15).to(tl.float32) + ZERO_OFFSET
    scales = tl.load(scale_ptr + group[:, None] * stride_sg + n)
    return w0, w1, w2, w3, x0, x1, x2, x3, zeros, scales


@triton.jit
def _mma_step(words, xs, nz0, nz1, nz2, nz3, d, T: tl.constexpr):
    w0, w1, w2, w3 = four_columns(words, T)
    x0, x1, x2, x3 = four_columns(xs, T)
    return tl.inline_asm_elementwise(
        _MMA_STEP, _CONSTRAINTS,
        [w0, w1, w2, w3, x0, x1, x2, x3, nz0, nz1, nz2, nz3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]],
        dtype=[tl.float32] * 8, is_pure=True, pack=1,
    )  # fmt: skip


@triton.jit(do_not_specialize=["rows"])
def _int4_mma_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, partial_ptr, count_ptr, rows, N, groups_per_warp,
    stride_x32, stride_wk, stride_sg, stride_zg, stride_o,
    groups, ZERO_OFFSET: tl.constexpr, SPLIT: tl.constexpr, WARPS: tl.constexpr, BLOCKED: tl.constexpr,
    WARP_N: tl.constexpr, DEPTH: tl.constexpr,
):  # fmt: skip
    T: tl.constexpr = 32 * WARPS
    pid = tl.program_id(0)
    split, tile = pid % SPLIT, pid // SPLIT
    t = tl.arange(0, T)
    lane, warp = t % 32, t // 32
    g, c = lane // 4, lane % 4
    if WARP_N:  # the warps side by side along N, each over the split's whole K range
        lane_n = (tile * WARPS + warp) * TILE_N + 4 * g
        first = split * groups_per_warp + warp * 0
    else:
        lane_n = tile * TILE_N + 4 * g
        first = (split * WARPS + warp) * groups_per_warp  # [T]: this warp's first group
    zero = tl.zeros([T], tl.float32)
    acc = (zero, zero, zero, zero, zero, zero, zero, zero)
    token = tl.minimum(g, rows - 1)
    loaded = _group_loads(w_ptr, x_ptr, zero_ptr, scale_ptr, first, lane_n, c, token, stride_wk, stride_x32,
                          stride_sg, stride_zg, groups, ZERO_OFFSET, BLOCKED)  # fmt: skip
    ahead = loaded
    if DEPTH == 2:
        ahead = _group_loads(w_ptr, x_ptr, zero_ptr, scale_ptr, first + tl.minimum(1, groups_per_warp - 1), lane_n, c,
                             token, stride_wk, stride_x32, stride_sg, stride_zg, groups, ZERO_OFFSET, BLOCKED)  # fmt: skip
    for i in range(groups_per_warp):
        w0, w1, w2, w3, x0, x1, x2, x3, zeros, scales = loaded
        nxt = first + tl.minimum(i + DEPTH, groups_per_warp - 1)
        if DEPTH == 2:
            loaded = ahead
        ahead = _group_loads(w_ptr, x_ptr, zero_ptr, scale_ptr, nxt, lane_n, c, token, stride_wk, stride_x32,
                             stride_sg, stride_zg, groups, ZERO_OFFSET, BLOCKED)  # fmt: skip
        if DEPTH == 1:
            loaded = ahead
        nz = _bf16_pair(-(128.0 + zeros))
        nz0, nz1, nz2, nz3 = four_columns(nz, T)
        s0, s1, s2, s3 = four_columns(scales.to(tl.float32), T)
        d = (zero, zero, zero, zero, zero, zero, zero, zero)
        d = _mma_step(w0, x0, nz0, nz1, nz2, nz3, d, T)
        d = _mma_step(w1, x1, nz0, nz1, nz2, nz3, d, T)
        d = _mma_step(w2, x2, nz0, nz1, nz2, nz3, d, T)
        d = _mma_step(w3, x3, nz0, nz1, nz2, nz3, d, T)
        acc = (acc[0] + d[0] * s0, acc[1] + d[1] * s0, acc[2] + d[2] * s1, acc[3] + d[3] * s1,
               acc[4] + d[4] * s2, acc[5] + d[5] * s2, acc[6] + d[6] * s3, acc[7] + d[7] * s3)  # fmt: skip
    # lane (g, c): acc 2j + p = token 2c + p, output lane_n + j  (j = 0..3, p = 0, 1)
    vals = tl.join(tl.join(tl.join(acc[0], acc[1]), tl.join(acc[2], acc[3])),
                   tl.join(tl.join(acc[4], acc[5]), tl.join(acc[6], acc[7])))  # fmt: skip
    vals = tl.reshape(vals, [T, 8])
    if WARP_N:
        l32 = tl.arange(0, T)
        n_base = (tile * WARPS + l32 // 32) * TILE_N
        TILE: tl.constexpr = T
    else:
        vals = tl.sum(tl.reshape(vals, [WARPS, 32, 8]), 0)  # element e holds acc m (below)
        l32 = tl.arange(0, 32)
        n_base = tile * TILE_N + l32 * 0
        TILE: tl.constexpr = 32
    g32, c32 = (l32 % 32) // 4, l32 % 4
    e = tl.arange(0, 8)
    m = 4 * (e % 2) + 2 * ((e // 2) % 2) + e // 4  # joins add the last axis: e = 4 a + 2 b + c <- acc 4c + 2b + a
    p, j = m % 2, m // 2
    n = n_base[:, None] + 4 * g32[:, None] + j[None, :]
    token = 2 * c32[:, None] + p[None, :]
    mask = (token < rows) & (n < N)
    if SPLIT == 1:
        tl.store(out_ptr + token * stride_o + n, vals.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        base = partial_ptr + tile * SPLIT * TILE * 8 + l32[:, None] * 8 + e[None, :]
        tl.store(base + split * TILE * 8, vals)
        tl.debug_barrier()
        if tl.atomic_add(count_ptr + tile, 1, sem="acq_rel") == SPLIT - 1:
            total = tl.zeros([TILE, 8], tl.float32)
            for s in tl.static_range(SPLIT):
                total += tl.load(base + s * TILE * 8, cache_modifier=".cg")
            tl.store(out_ptr + token * stride_o + n, total.to(out_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(count_ptr + tile, 0)


_SCRATCH: dict = {}


def block(words: torch.Tensor) -> torch.Tensor:
    """GPTQ words [K/8, N] -> [N/32][K/128][16][32] contiguous."""
    kw, n = words.shape
    return words.view(kw // 16, 16, n // 32, 32).permute(2, 0, 1, 3).contiguous()


def gemv(x: torch.Tensor, weight, split: int | None = None, warps: int = 4, programs_per_sm: int = 4,
         blocked: torch.Tensor | None = None, warp_n: bool = False, depth: int = 1) -> torch.Tensor:
    rows, k = x.shape
    n = weight.out_features
    assert rows <= 8 and x.dtype == torch.bfloat16 and k % 128 == 0 and weight.group_size == 128 and n % 32 == 0
    out = x.new_empty(rows, n)
    tiles = triton.cdiv(n, TILE_N * (warps if warp_n else 1))
    groups = k // 128
    kwarps = 1 if warp_n else warps
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    if split is None:
        split = 1
        while tiles * split < programs_per_sm * sms and groups % (2 * split * kwarps) == 0:
            split *= 2
    assert groups % (split * kwarps) == 0 and (not warp_n or n % (32 * warps) == 0)
    key = x.device
    if key not in _SCRATCH:
        _SCRATCH[key] = (torch.empty(1 << 22, dtype=torch.float32, device=x.device),
                         torch.zeros(1 << 16, dtype=torch.int32, device=x.device))
    partial, count = _SCRATCH[key]
    _int4_mma_kernel[(tiles * split,)](
        x.view(torch.int32), weight.weight if blocked is None else blocked, weight.scales, weight.zeros, out, partial, count,
        rows, n, groups // (split * kwarps),
        x.stride(0) // 2, weight.weight.stride(0), weight.scales.stride(0), weight.zeros.stride(0), out.stride(0),
        groups, ZERO_OFFSET=weight.zero_offset, SPLIT=split, WARPS=warps, BLOCKED=blocked is not None,
        WARP_N=warp_n, DEPTH=depth, num_warps=warps,
    )  # fmt: skip
    return out
