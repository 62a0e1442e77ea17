"""Probe (s24 B): the fp8 GEMV through tl.dot with the activations four ways: MODE 0 a8 (x pre-quantized
e4m3, one scale), 1 a16 (x pre-converted f16; weights fp8 -> f16 in registers), 2 a8 with the RMSNorm and
per-token quantization in the kernel, 3 a16 with the RMSNorm in the kernel. Against the shipped fp8_gemv
(fused). SPLIT > 1 stores fp32 partials unreduced (a bound). Qwen3-8B projections, weights > 8x L2."""
import json, math, sys
sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from f8mma_probe import timed
from layout_probe import fusion_for
from tokenmill.kernels.triton import fp8_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION


@triton.jit
def _tc_kernel(w_ptr, x_ptr, nw_ptr, ws_ptr, xs_ptr, out_ptr, N, K, k_per_split, stride_w, eps,
               BO: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, STAGES: tl.constexpr,
               SPLIT: tl.constexpr, MODE: tl.constexpr, NB: tl.constexpr):
    pid = tl.program_id(0)
    tile, split = pid // SPLIT, pid % SPLIT
    rows = tile * BO + tl.arange(0, BO)
    t = tl.arange(0, BT)
    k0 = split * k_per_split
    rstd = 0.0
    xscale = 1.0
    if MODE == 4:
        rstd = tl.load(xs_ptr + 1)
        xscale = tl.load(xs_ptr + 2)
    elif MODE == 5:
        kk_all = tl.arange(0, NB)
        xa = tl.load(x_ptr + kk_all).to(tl.float32)
        na = tl.load(nw_ptr + kk_all).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(xa * xa, 0) / K + eps)
        xscale = tl.maximum(tl.max(tl.abs(xa * na), 0) * rstd, 1e-30) / 448.0
    elif MODE >= 2:
        ss = tl.zeros([NB], tl.float32)
        for j in range(0, K, NB):
            xk = tl.load(x_ptr + j + tl.arange(0, NB)).to(tl.float32)
            ss += xk * xk
        rstd = tl.rsqrt(tl.sum(ss, 0) / K + eps)
        if MODE == 2:
            am = tl.zeros([NB], tl.float32)
            for j in range(0, K, NB):
                xk = tl.load(x_ptr + j + tl.arange(0, NB))
                nk = tl.load(nw_ptr + j + tl.arange(0, NB))
                am = tl.maximum(am, tl.abs((nk * (xk.to(tl.float32) * rstd).to(tl.bfloat16)).to(tl.float32)))
            xscale = tl.maximum(tl.max(am, 0), 1e-30) / 448.0
    elif MODE == 0:
        xscale = tl.load(xs_ptr + 2)
    acc = tl.zeros([BO, BT], tl.float32)
    for kk in tl.range(0, k_per_split, BK, num_stages=STAGES):
        k = k0 + kk + tl.arange(0, BK)
        w = tl.load(w_ptr + rows[:, None] * stride_w + k[None, :])
        if MODE < 2:
            x = tl.load(x_ptr + t[None, :] * K + k[:, None], mask=t[None, :] < 1, other=0.0)
        else:
            xr = tl.load(x_ptr + k).to(tl.float32)
            nk = tl.load(nw_ptr + k)
            xn = (nk * (xr * rstd).to(tl.bfloat16)).to(tl.float32)
            if MODE != 3:
                x = tl.where(t[None, :] == 0, (xn / xscale)[:, None], 0.0).to(tl.float8e4nv)
            else:
                x = tl.where(t[None, :] == 0, xn[:, None], 0.0).to(tl.float16)
        if MODE == 1 or MODE == 3:
            acc = tl.dot(w.to(tl.float16), x, acc)
        else:
            acc = tl.dot(w, x, acc)
    y = tl.sum(tl.where(t[None, :] == 0, acc, 0.0), 1) * tl.load(ws_ptr + rows) * xscale
    if SPLIT == 1:
        tl.store(out_ptr + rows, y.to(tl.bfloat16))
    else:
        tl.store(out_ptr + split * N + rows, y)


def tc(x, nw, xs, w, ws, out, bo, bk, stages, split, mode, warps=4):
    n, k = w.shape
    NB_ = k if mode == 5 else 1024
    _tc_kernel[(n // bo * split,)](w, x, nw, ws, xs, out, n, k, k // split, w.stride(0), 1e-6,
                                   BO=bo, BK=bk, BT=16, STAGES=stages, SPLIT=split, MODE=mode, NB=NB_,
                                   num_warps=warps)
    return out


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    totals = {}
    for name, (inp, shards) in [(k_, v_) for k_, v_ in projections("qwen3-8b").items() if k_ in ("qkv", "gate_up")]:
        n = sum(shards)
        first = build(FORMATS["fp8-channel"](), inp, shards, dev)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["fp8-channel"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
        ws = [(la.weight, la.weight_scale.float().reshape(-1).contiguous()) for la in layers]
        x, fusion = fusion_for(name, inp, n, dev)
        xb = torch.randn(1, inp, dtype=torch.bfloat16, device=dev)
        nw = (1 + 0.1 * torch.randn(inp, device=dev)).to(torch.bfloat16)
        rstd = torch.rsqrt(xb.float().pow(2).mean() + 1e-6)
        xn = (nw * (xb.float() * rstd).to(torch.bfloat16)).float()  # the normed row, [1, inp]
        xs = xn.abs().max().reshape(1) / 448.0
        x8 = torch.zeros(16, inp, dtype=torch.float8_e4m3fn, device=dev)
        x8[0] = (xn[0] / xs).to(torch.float8_e4m3fn)
        x16 = torch.zeros(16, inp, dtype=torch.float16, device=dev)
        x16[0] = xn[0].to(torch.float16)
        wd = ws[0][0].float() * ws[0][1][:, None]
        ref16 = xn @ wd.T
        ref8 = (x8[:1].float() * xs) @ wd.T
        v = {"shipped fused": timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion) for w, s in ws])}
        xs3 = torch.stack([xs[0], rstd, xs[0]]).float().contiguous()
        inputs = {0: (x8, ref8), 1: (x16, ref16), 2: (xb, ref8), 3: (xb, ref16), 4: (xb, ref8), 5: (xb, ref8)}
        for mode in (0, 2, 4, 5):
            xin, ref = inputs[mode]
            for bo, bk, stages in ((64, 256, 3), (64, 128, 4), (128, 128, 3), (128, 256, 3), (64, 256, 4)):
                for split in (1, 2, 4, 8):
                    tiles = n // bo
                    if split > 1 and (tiles >= 2 * sms or tiles * split > 8 * sms):
                        continue
                    if split == 1 and tiles < sms:
                        continue
                    if inp % (split * bk):
                        continue
                    key = f"m{mode} bo{bo} bk{bk} st{stages} sp{split}"
                    out = torch.zeros(split * n if split > 1 else n, dtype=torch.float32 if split > 1 else torch.bfloat16, device=dev)
                    try:
                        tc(xin, nw, xs3, ws[0][0], ws[0][1], out, bo, bk, stages, split, mode)
                        got = out.float().reshape(split, n).sum(0) if split > 1 else out.float()
                        err = ((got - ref[0]).abs().max() / ref.abs().max()).item()
                        err16 = ((got - ref16[0]).abs().max() / ref16.abs().max()).item()
                        us = timed([lambda w=w, s=s, out=out: tc(xin, nw, xs3, w, s, out, bo, bk, stages, split, mode) for w, s in ws])
                    except Exception as e:
                        print(name, key, "failed", repr(e)[:300], flush=True)
                        continue
                    v[key] = us
                    print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "err": round(err, 5), "err_vs_a16": round(err16, 5)}), flush=True)
        v["shipped fused again"] = timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion) for w, s in ws])
        for key in ("shipped fused", "shipped fused again"):
            print(json.dumps({"proj": name, "variant": key, "us": round(v[key], 2)}), flush=True)
        for key, us in v.items():
            totals.setdefault(key, {})[name] = us
        del layers, ws
        torch.cuda.empty_cache()
    for mode in (0, 2, 4, 5):
        best = {}
        for key, per in totals.items():
            if not key.startswith(f"m{mode} "):
                continue
            for proj, us in per.items():
                if proj not in best or us < best[proj][1]:
                    best[proj] = (key, round(us, 2))
        print(f"BEST mode {mode}", json.dumps(best), flush=True)
    for key in ("shipped fused", "shipped fused again"):
        print(key, json.dumps({p: round(u, 2) for p, u in totals[key].items()}), f"sum {sum(totals[key].values()):.2f}", flush=True)


if __name__ == "__main__":
    main()
