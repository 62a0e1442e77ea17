"""Probe: a W8A8 fp8 GEMV on the tensor cores (mma.sync m16n8k32 e4m3, sm_89+) for one token row, against the
shipped W8A16 `fp8_gemv` (CUDA-core conversions), Qwen3-8B projections, no fusion, weights rotated through
> 8x L2 in one CUDA graph. x is quantized to e4m3 per token outside the kernel (an upper bound on the
kernel's own speed). Lane (g, c) loads 16 contiguous bytes of rows g and g + 8 per 64-byte K chunk; both
mma operands hold the same permutation of the chunk's inputs."""
import json, math, sys
sys.path.insert(0, "bench")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import fp8_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.kernels.triton.gemv_rows import four_columns
from tokenmill.kernels.triton.split_k import num_sms

_MMA2 = tl.constexpr("""{
mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {$0, $1, $2, $3}, {$4, $8, $5, $9}, {$12, $13}, {$16, $17, $18, $19};
mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {$0, $1, $2, $3}, {$6, $10, $7, $11}, {$14, $15}, {$0, $1, $2, $3};
}""")
_CONS = tl.constexpr(",".join(["=f"] * 4 + ["r"] * 12 + ["f"] * 4))


def _a16_ptx() -> str:
    """$4..$7 row g's words, $8..$11 row g+8's, $12..$19 x f16 pairs (2 per word), $20..$23 sums in."""
    lines = [".reg .b16 l, h;", ".reg .b32 p0, p1, q0, q1;"]
    for i in range(4):
        lines += [f"mov.b32 {{l, h}}, ${4 + i};", "cvt.rn.f16x2.e4m3x2 p0, l;", "cvt.rn.f16x2.e4m3x2 p1, h;",
                  f"mov.b32 {{l, h}}, ${8 + i};", "cvt.rn.f16x2.e4m3x2 q0, l;", "cvt.rn.f16x2.e4m3x2 q1, h;"]
        acc = "{$20, $21, $22, $23}" if i == 0 else "{$0, $1, $2, $3}"
        lines.append("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {$0, $1, $2, $3}, {p0, q0, p1, q1}, "
                     f"{{${12 + 2 * i}, ${13 + 2 * i}}}, {acc};")
    return "{\n" + "\n".join(lines) + "\n}"


_A16 = tl.constexpr(_a16_ptx())
_CONS16 = tl.constexpr(",".join(["=f"] * 4 + ["r"] * 16 + ["f"] * 4))


@triton.jit
def _chunk_mma16(w0, w1, xlo, xhi, d0, d1, d2, d3, T: tl.constexpr):
    a0, a1, a2, a3 = four_columns(w0, T)
    b0, b1, b2, b3 = four_columns(w1, T)
    x0, x1, x2, x3 = four_columns(xlo, T)
    x4, x5, x6, x7 = four_columns(xhi, T)
    return tl.inline_asm_elementwise(
        _A16, _CONS16, [a0, a1, a2, a3, b0, b1, b2, b3, x0, x1, x2, x3, x4, x5, x6, x7, d0, d1, d2, d3],
        dtype=[tl.float32] * 4, is_pure=True, pack=1)


@triton.jit
def _chunk_loads(w_ptr, x_ptr, row0, row1, chunk, c, KW):
    """[T, 4] words of rows row0 and row1 and of x in 64-byte chunk `chunk`: lane words chunk * 16 + 4c + j."""
    word = (chunk * 16 + 4 * c)[:, None] + tl.arange(0, 4)[None, :]
    return (tl.load(w_ptr + row0[:, None] * KW + word), tl.load(w_ptr + row1[:, None] * KW + word),
            tl.load(x_ptr + word))


@triton.jit
def _loads(w_ptr, x_ptr, row0, row1, chunk0, c, KW, CHUNKS: tl.constexpr):
    first = _chunk_loads(w_ptr, x_ptr, row0, row1, chunk0, c, KW)
    second, third, fourth = first, first, first
    if CHUNKS >= 2:
        second = _chunk_loads(w_ptr, x_ptr, row0, row1, chunk0 + 1, c, KW)
    if CHUNKS == 4:
        third = _chunk_loads(w_ptr, x_ptr, row0, row1, chunk0 + 2, c, KW)
        fourth = _chunk_loads(w_ptr, x_ptr, row0, row1, chunk0 + 3, c, KW)
    return first, second, third, fourth


@triton.jit
def _chunk_loads16(w_ptr, x_ptr, row0, row1, chunk, c, KW):
    """As `_chunk_loads`, x as f16 (two per word): the lane's 16 inputs are 8 words at chunk * 32 + 8c."""
    word = (chunk * 16 + 4 * c)[:, None] + tl.arange(0, 4)[None, :]
    xw = (chunk * 32 + 8 * c)[:, None] + tl.arange(0, 4)[None, :]
    return (tl.load(w_ptr + row0[:, None] * KW + word), tl.load(w_ptr + row1[:, None] * KW + word),
            tl.load(x_ptr + xw), tl.load(x_ptr + xw + 4))


@triton.jit
def _loads16(w_ptr, x_ptr, row0, row1, chunk0, c, KW, CHUNKS: tl.constexpr):
    first = _chunk_loads16(w_ptr, x_ptr, row0, row1, chunk0, c, KW)
    second, third, fourth = first, first, first
    if CHUNKS >= 2:
        second = _chunk_loads16(w_ptr, x_ptr, row0, row1, chunk0 + 1, c, KW)
    if CHUNKS == 4:
        third = _chunk_loads16(w_ptr, x_ptr, row0, row1, chunk0 + 2, c, KW)
        fourth = _chunk_loads16(w_ptr, x_ptr, row0, row1, chunk0 + 3, c, KW)
    return first, second, third, fourth


@triton.jit
def _halves(t, T: tl.constexpr, W: tl.constexpr):
    """[T, W] -> ([T, W/2] first half of columns, second half)."""
    return tl.split(tl.permute(tl.reshape(t, [T, 2, W // 2]), (0, 2, 1)))


@triton.jit
def _chunk_mma(w0, w1, xw, d0, d1, d2, d3, T: tl.constexpr):
    a0, a1, a2, a3 = four_columns(w0, T)
    b0, b1, b2, b3 = four_columns(w1, T)
    x0, x1, x2, x3 = four_columns(xw, T)
    return tl.inline_asm_elementwise(
        _MMA2, _CONS, [a0, a1, a2, a3, b0, b1, b2, b3, x0, x1, x2, x3, d0, d1, d2, d3],
        dtype=[tl.float32] * 4, is_pure=True, pack=1)


@triton.jit
def _f8_mma_kernel(x_ptr, w_ptr, ws_ptr, xs_ptr, out_ptr, KW, steps_per_split, SPLIT: tl.constexpr,
                   WARPS: tl.constexpr, CHUNKS: tl.constexpr, A16: tl.constexpr):
    T: tl.constexpr = 32 * WARPS
    pid = tl.program_id(0)
    split, tile = pid % SPLIT, pid // SPLIT
    t = tl.arange(0, T)
    g, c = (t % 32) // 4, t % 4
    row0 = (tile * WARPS + t // 32) * 16 + g
    row1 = row0 + 8
    first = split * steps_per_split
    if A16:
        loaded = _loads16(w_ptr, x_ptr, row0, row1, first * CHUNKS, c, KW, CHUNKS)
    else:
        loaded = _loads(w_ptr, x_ptr, row0, row1, first * CHUNKS, c, KW, CHUNKS)
    z = tl.zeros([T], tl.float32)
    d0, d1, d2, d3 = z, z, z, z
    for i in range(steps_per_split):
        now = loaded
        ahead = first + tl.minimum(i + 1, steps_per_split - 1)
        if A16:
            loaded = _loads16(w_ptr, x_ptr, row0, row1, ahead * CHUNKS, c, KW, CHUNKS)
        else:
            loaded = _loads(w_ptr, x_ptr, row0, row1, ahead * CHUNKS, c, KW, CHUNKS)
        for u in tl.static_range(CHUNKS):
            if A16:
                d0, d1, d2, d3 = _chunk_mma16(*now[u], d0, d1, d2, d3, T)
            else:
                d0, d1, d2, d3 = _chunk_mma(*now[u], d0, d1, d2, d3, T)
    xs_ = tl.load(xs_ptr)
    mine = c == 0
    y0 = d0 * tl.load(ws_ptr + row0) * xs_
    y1 = d2 * tl.load(ws_ptr + row1) * xs_
    if SPLIT == 1:
        tl.store(out_ptr + row0, y0, mask=mine)
        tl.store(out_ptr + row1, y1, mask=mine)
    else:
        tl.atomic_add(out_ptr + row0, y0, mask=mine, sem="relaxed")
        tl.atomic_add(out_ptr + row1, y1, mask=mine, sem="relaxed")


def split_for(tiles, steps, sms, pps):
    split = 1
    while tiles * split < pps * sms and steps % (2 * split) == 0 and split < 16:
        split *= 2
    return split


def f8_mma(x8, xs, w, ws, out, warps=4, chunks=2, pps=2, a16=False):
    n, k = w.shape
    tiles = n // (16 * warps)
    steps = k // (64 * chunks)
    split = split_for(tiles, steps, num_sms(w.device), pps)
    _f8_mma_kernel[(tiles * split,)](x8.view(torch.int32), w.view(torch.int32), ws, xs, out, k // 4,
                                     steps // split, SPLIT=split, WARPS=warps, CHUNKS=chunks, A16=a16, num_warps=warps)
    return out


def timed(calls, replays=20):
    for c in calls[:2]:
        c()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    g.replay(); torch.cuda.synchronize()
    res = []
    for _ in range(3):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(replays):
            g.replay()
        e.record(); e.synchronize()
        res.append(s.elapsed_time(e) * 1000 / (replays * len(calls)))
    return sorted(res)[1]


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        first = build(FORMATS["fp8-channel"](), inp, shards, dev)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["fp8-channel"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
        ws = [(la.weight, la.weight_scale.float().reshape(-1).contiguous()) for la in layers]
        x = torch.randn(1, inp, dtype=torch.bfloat16, device=dev)
        xs = (x.float().abs().amax() / 448.0).reshape(1)
        x8 = (x.float() / xs).to(torch.float8_e4m3fn).reshape(-1)
        n = sum(shards)
        out = torch.zeros(n, dtype=torch.float32, device=dev)
        ref = fp8_gemv.gemv(x, ws[0][0], ws[0][1], NO_FUSION).float().reshape(-1)
        v = {"shipped w8a16": timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, NO_FUSION) for w, s in ws])}
        one = torch.ones(1, dtype=torch.float32, device=dev)
        x16 = x.to(torch.float16).reshape(-1)
        for warps, chunks, pps, a16 in ((4, 2, 4, False), (4, 4, 4, False), (4, 4, 2, False), (8, 2, 4, False),
                                        (4, 2, 4, True), (4, 4, 4, True), (4, 4, 2, True), (8, 2, 4, True),
                                        (8, 4, 2, True), (4, 2, 8, True)):
            if (n // (16 * warps)) == 0 or (inp // (64 * chunks)) == 0:
                continue
            out.zero_()
            xa, sa = (x16, one) if a16 else (x8, xs)
            f8_mma(xa, sa, ws[0][0], ws[0][1], out, warps, chunks, pps, a16)
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            key = f"mma {'a16' if a16 else 'a8'} w{warps} c{chunks} pps{pps}"
            v[key] = timed([lambda w=w, s=s: f8_mma(xa, sa, w, s, out, warps, chunks, pps, a16) for w, s in ws])
            print(json.dumps({"proj": name, "variant": key, "err_vs_w8a16": round(err, 5)}), flush=True)
        v["shipped again"] = timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, NO_FUSION) for w, s in ws])
        for key, us in v.items():
            print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "TBps": round(size / us / 1e6, 2)}),
                  flush=True)
            totals[key] = totals.get(key, 0) + us
        del layers, ws
        torch.cuda.empty_cache()
    for key, us in totals.items():
        print(f"TOTAL {key:24s} {us:7.2f} us/layer", flush=True)


if __name__ == "__main__":
    main()
