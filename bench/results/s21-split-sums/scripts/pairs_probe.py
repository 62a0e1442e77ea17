"""Probe: the s19 engine fp8 tensor-core GEMV (count-and-fence split sums, fused epilogue) with its
activations given as f16 pairs (as a producer kernel could write them) against the in-kernel prologue
and shared-memory exchange, and the shipped fp8_gemv. Qwen3-8B projections, one token, weights rotated."""
import json, math, sys
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s21")
import torch
from quant_gemm import FORMATS, build, projections
from gemv_probe import timed, fusion_for
import fp8_mma_pairs as mma
from tokenmill.kernels import reference
from tokenmill.kernels.triton import fp8_gemv


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        out_f = sum(shards)
        x, fusion = fusion_for(name, inp, out_f, 1, dev)
        if fusion.norm is not None:
            xe = reference.rms_norm(x, *fusion.norm)[0]
        elif fusion.silu_mul:
            xe = reference.silu_and_mul(x)
        else:
            xe = x
        pairs = xe.to(torch.float16).contiguous().view(torch.int32)
        first = build(FORMATS["fp8-channel"](), inp, shards, dev)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["fp8-channel"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
        ws = [(la.weight, la.weight_scale) for la in layers]
        ref = fp8_gemv.gemv(x, *ws[0], fusion).float()
        v, err = {"fp8 gemv": timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion) for w, s in ws])}, {}
        for pps in (2, 4):
            mma.PROGRAMS_PER_SM = pps
            v[f"mma exchange pps{pps}"] = timed([lambda w=w, s=s: mma.gemv(x, w, s, fusion) for w, s in ws])
            v[f"mma f16 pairs pps{pps}"] = timed([lambda w=w, s=s: mma.gemv(x, w, s, fusion, pairs) for w, s in ws])
            err[f"mma exchange pps{pps}"] = (mma.gemv(x, *ws[0], fusion).float() - ref).abs().max().item()
            err[f"mma f16 pairs pps{pps}"] = (mma.gemv(x, *ws[0], fusion, pairs).float() - ref).abs().max().item()
        for key, us in v.items():
            print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "split": mma.launch_shape(out_f, inp, 132)[1],
                              "max_abs_diff_vs_fp8_gemv": err.get(key), "ref_max": ref.abs().max().item()}), flush=True)
            totals[key] = totals.get(key, 0) + us
        del layers, ws
        torch.cuda.empty_cache()
    for key, us in totals.items():
        print(f"TOTAL {key:24s} {us:7.2f} us/layer", flush=True)


if __name__ == "__main__":
    main()
