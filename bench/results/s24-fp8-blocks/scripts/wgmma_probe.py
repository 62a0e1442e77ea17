"""Probe (s24): a W8A8 fp8 GEMV through Triton's tl.dot (wgmma on sm_90, QMMA on sm_89/120), swap-AB:
acc[BO weight rows, 16 token cols] = W[BO, BK] @ x^T[BK, 16], one real token (masked columns), against the
shipped W8A16 fp8_gemv (fused, as the decode layer calls it), cuBLASLt _scaled_mm at 16 rows and the s19
kwarps a16 mma. Qwen3-8B projections, weights rotated > 8x L2, one CUDA graph per variant.
SPLIT > 1 variants store fp32 partials [SPLIT, N] unreduced: a bound, not a kernel."""
import json, math, sys, traceback
sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from f8mma_probe import timed
from kwarps_probe import kwarps
from layout_probe import fusion_for
from tokenmill.kernels.triton import fp8_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION


@triton.jit
def _a8_kernel(w_ptr, x_ptr, ws_ptr, xs_ptr, out_ptr, M, N, K, k_per_split, stride_w,
               BO: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, STAGES: tl.constexpr, SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    tile, split = pid // SPLIT, pid % SPLIT
    rows = tile * BO + tl.arange(0, BO)
    t = tl.arange(0, BT)
    k0 = split * k_per_split
    acc = tl.zeros([BO, BT], tl.float32)
    for kk in tl.range(0, k_per_split, BK, num_stages=STAGES):
        k = k0 + kk + tl.arange(0, BK)
        w = tl.load(w_ptr + rows[:, None] * stride_w + k[None, :])
        x = tl.load(x_ptr + t[None, :] * K + k[:, None], mask=t[None, :] < M, other=0.0)
        acc = tl.dot(w, x, acc)
    y = tl.sum(tl.where(t[None, :] == 0, acc, 0.0), 1) * tl.load(ws_ptr + rows) * tl.load(xs_ptr)
    if SPLIT == 1:
        tl.store(out_ptr + rows, y.to(tl.bfloat16))
    else:
        tl.store(out_ptr + split * N + rows, y)


def a8(xq, xs, w, ws, out, bo, bk, stages, split, warps):
    n, k = w.shape
    a8_kernel = _a8_kernel[(n // bo * split,)]
    a8_kernel(w, xq, ws, xs, out, 1, n, k, k // split, w.stride(0), BO=bo, BK=bk, BT=16, STAGES=stages,
              SPLIT=split, num_warps=warps)
    return out


def main():
    dev = torch.device("cuda")
    name_dev = torch.cuda.get_device_name()
    print(name_dev, torch.__version__, triton.__version__, flush=True)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        n = sum(shards)
        first = build(FORMATS["fp8-channel"](), inp, shards, dev)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["fp8-channel"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
        ws = [(la.weight, la.weight_scale.float().reshape(-1).contiguous()) for la in layers]
        x, fusion = fusion_for(name, inp, n, dev)
        xn = torch.randn(1, inp, dtype=torch.bfloat16, device=dev)
        xs = xn.float().abs().max().reshape(1) / 448.0
        xq = (xn.float() / xs).to(torch.float8_e4m3fn)
        x16q = torch.zeros(16, inp, dtype=torch.float8_e4m3fn, device=dev)
        x16q[0] = xq[0]
        one = torch.ones((), device=dev)
        ref = (xq.float() * xs) @ (ws[0][0].float() * ws[0][1][:, None]).T  # [1, n] fp32
        v = {}
        v["shipped fused"] = timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion) for w, s in ws])
        v["shipped plain"] = timed([lambda w=w, s=s: fp8_gemv.gemv(xn, w, s, NO_FUSION) for w, s in ws])
        try:
            v["scaled_mm m16"] = timed([lambda w=w: torch._scaled_mm(x16q, w.T, scale_a=one, scale_b=one,
                                                                      out_dtype=torch.bfloat16, use_fast_accum=True) for w, s in ws])
        except Exception as e:
            print("scaled_mm failed", repr(e)[:200], flush=True)
        x16 = xn.to(torch.float16).reshape(-1)
        outf = torch.zeros(n, dtype=torch.float32, device=dev)
        if (inp // 128) % 2 == 0:
            v["kwarps wk2 c2"] = timed([lambda w=w, s=s: kwarps(x16, w, s, outf, 2, 2) for w, s in ws])
        if (inp // 128) % 8 == 0:
            v["kwarps wk8 c2"] = timed([lambda w=w, s=s: kwarps(x16, w, s, outf, 8, 2) for w, s in ws])
        for bo, warps in ((64, 4), (128, 4), (128, 8)):
            for bk in (128, 256):
                for stages in (3, 4, 6):
                    for split in (1, 2, 4, 8):
                        tiles = n // bo
                        if tiles * split > 8 * sms or (split > 1 and tiles * split < sms // 2):
                            continue
                        if split > 1 and tiles >= 2 * sms:
                            continue
                        if inp % (split * bk):
                            continue
                        key = f"a8 bo{bo} w{warps} bk{bk} st{stages} sp{split}"
                        out = torch.zeros(split * n if split > 1 else n, dtype=torch.float32 if split > 1 else torch.bfloat16, device=dev)
                        try:
                            a8(xq, xs, ws[0][0], ws[0][1], out, bo, bk, stages, split, warps)
                            got = out.float().reshape(split, n).sum(0) if split > 1 else out.float()
                            err = ((got - ref[0]).abs().max() / ref.abs().max()).item()
                            us = timed([lambda w=w, s=s, out=out: a8(xq, xs, w, s, out, bo, bk, stages, split, warps) for w, s in ws])
                        except Exception as e:
                            print(key, "failed", repr(e)[:160], flush=True)
                            continue
                        v[key] = us
                        print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "err": round(err, 5)}), flush=True)
        v["shipped fused again"] = timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion) for w, s in ws])
        for key, us in v.items():
            print(json.dumps({"proj": name, "variant": key, "us": round(us, 2)}), flush=True)
            totals.setdefault(key, {})[name] = us
        del layers, ws
        torch.cuda.empty_cache()
    best = {}
    for key, per in totals.items():
        for proj, us in per.items():
            if key.startswith("a8") and (proj not in best or us < best[proj][1]):
                best[proj] = (key, us)
        if len(per) == 4:
            print(f"TOTAL {key:34s} {sum(per.values()):7.2f} us/layer", flush=True)
    print("BEST a8 per projection", json.dumps(best), f"sum {sum(b[1] for b in best.values()):.2f}", flush=True)


if __name__ == "__main__":
    main()
