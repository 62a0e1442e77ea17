"""Probe: the fp8 tensor-core GEMV (a16) with K split inside the program: WK warps share 16 output rows,
warp kg taking K steps kg, kg + WK, ...; their sums added through shared memory (tl.sum over the warps:
fixed order, no atomics, no fence). Against the shipped fp8_gemv and the relaxed-atomic split of
f8mma_probe (not deterministic). Qwen3-8B projections, no fusion, weights rotated > 8x L2."""
import json, math, sys
sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from f8mma_probe import _chunk_loads16, _chunk_mma16, f8_mma, timed
from tokenmill.kernels.triton import fp8_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION


@triton.jit
def _step_loads(w_ptr, x_ptr, row0, row1, step, c, KW, CHUNKS: tl.constexpr):
    first = _chunk_loads16(w_ptr, x_ptr, row0, row1, step * CHUNKS, c, KW)
    second = first
    if CHUNKS == 2:
        second = _chunk_loads16(w_ptr, x_ptr, row0, row1, step * CHUNKS + 1, c, KW)
    return first, second


@triton.jit
def _kwarps_kernel(x_ptr, w_ptr, ws_ptr, out_ptr, KW, iters, WK: tl.constexpr, CHUNKS: tl.constexpr):
    T: tl.constexpr = 32 * WK
    tile = tl.program_id(0)
    t = tl.arange(0, T)
    kg, g, c = t // 32, (t % 32) // 4, t % 4
    row0 = tile * 16 + g
    row1 = row0 + 8
    loaded = _step_loads(w_ptr, x_ptr, row0, row1, kg, c, KW, CHUNKS)
    z = tl.zeros([T], tl.float32)
    d0, d1, d2, d3 = z, z, z, z
    for i in range(iters):
        now = loaded
        ahead = tl.minimum(i + 1, iters - 1) * WK + kg
        loaded = _step_loads(w_ptr, x_ptr, row0, row1, ahead, c, KW, CHUNKS)
        d0, d1, d2, d3 = _chunk_mma16(*now[0], d0, d1, d2, d3, T)
        if CHUNKS == 2:
            d0, d1, d2, d3 = _chunk_mma16(*now[1], d0, d1, d2, d3, T)
    y0 = tl.sum(tl.reshape(d0, [WK, 32]), 0)
    y1 = tl.sum(tl.reshape(d2, [WK, 32]), 0)
    lane = tl.arange(0, 32)
    r0 = tile * 16 + lane // 4
    mine = lane % 4 == 0
    tl.store(out_ptr + r0, y0 * tl.load(ws_ptr + r0), mask=mine)
    tl.store(out_ptr + r0 + 8, y1 * tl.load(ws_ptr + r0 + 8), mask=mine)


def kwarps(x16, w, ws, out, wk, chunks):
    n, k = w.shape
    steps = k // (64 * chunks)
    assert steps % wk == 0
    _kwarps_kernel[(n // 16,)](x16.view(torch.int32), w.view(torch.int32), ws, out, k // 4, steps // wk,
                               WK=wk, CHUNKS=chunks, num_warps=wk)
    return out


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
        x16 = x.to(torch.float16).reshape(-1)
        one = torch.ones(1, dtype=torch.float32, device=dev)
        n = sum(shards)
        out = torch.zeros(n, dtype=torch.float32, device=dev)
        ref = fp8_gemv.gemv(x, ws[0][0], ws[0][1], NO_FUSION).float().reshape(-1)
        v = {"shipped": timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, NO_FUSION) for w, s in ws]),
             "atomic w4 c2 pps4": timed([lambda w=w, s=s: f8_mma(x16, one, w, s, out, 4, 2, 4, True) for w, s in ws])}
        for wk, chunks in ((2, 2), (4, 2), (8, 2), (4, 1), (8, 1), (16, 1)):
            if (inp // (64 * chunks)) % wk:
                continue
            kwarps(x16, ws[0][0], ws[0][1], out, wk, chunks)
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            key = f"kwarps wk{wk} c{chunks}"
            v[key] = timed([lambda w=w, s=s: kwarps(x16, w, s, out, wk, chunks) for w, s in ws])
            print(json.dumps({"proj": name, "variant": key, "err": round(err, 5)}), flush=True)
        v["shipped again"] = timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, NO_FUSION) for w, s in ws])
        for key, us in v.items():
            print(json.dumps({"proj": name, "variant": key, "us": round(us, 2)}), flush=True)
            totals[key] = totals.get(key, 0) + us
        del layers, ws
        torch.cuda.empty_cache()
    for key, us in totals.items():
        print(f"TOTAL {key:22s} {us:7.2f} us/layer", flush=True)


if __name__ == "__main__":
    main()
