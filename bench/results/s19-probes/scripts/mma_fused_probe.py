"""Probe: the engine's fp8_mma (fused prologue/epilogue, deterministic split K) per projection against
fp8_gemv, at PROGRAMS_PER_SM 1/2/4, with each projection's fusion and without; weights rotated > 8x L2."""
import json, math, sys
sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch
from quant_gemm import FORMATS, build, projections
from layout_probe import fusion_for, timed
from tokenmill.kernels.triton import fp8_gemv, fp8_mma
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        first = build(FORMATS["fp8-channel"](), inp, shards, dev)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["fp8-channel"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
        ws = [(la.weight, la.weight_scale) for la in layers]
        x, fusion = fusion_for(name, inp, sum(shards), dev)
        xn = torch.randn(1, inp, dtype=torch.bfloat16, device=dev)
        v = {"gemv fused": timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion) for w, s in ws]),
             "gemv plain": timed([lambda w=w, s=s: fp8_gemv.gemv(xn, w, s, NO_FUSION) for w, s in ws])}
        for pps in (1, 2, 4, 8):
            fp8_mma.PROGRAMS_PER_SM = pps
            v[f"mma fused pps{pps}"] = timed([lambda w=w, s=s: fp8_mma.gemv(x, w, s, fusion) for w, s in ws])
            v[f"mma plain pps{pps}"] = timed([lambda w=w, s=s: fp8_mma.gemv(xn, w, s, NO_FUSION) for w, s in ws])
        fp8_mma.PROGRAMS_PER_SM = 4
        err = ((fp8_mma.gemv(x, *ws[0], fusion).float() - fp8_gemv.gemv(x, *ws[0], fusion).float()).abs().max()).item()
        for key, us in v.items():
            print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "split": fp8_mma.launch_shape(sum(shards), inp, 132)[1], "maxdiff": err}), flush=True)
            totals[key] = totals.get(key, 0) + us
        del layers, ws
        torch.cuda.empty_cache()
    for key, us in totals.items():
        print(f"TOTAL {key:22s} {us:7.2f} us/layer", flush=True)


if __name__ == "__main__":
    main()
