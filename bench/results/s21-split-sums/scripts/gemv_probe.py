"""Per-projection µs of the quantized one-token GEMVs (Qwen3-8B, fused as in the model), weights rotated
> 8x L2 in one CUDA graph. Runs on either tree (old: count-and-fence split sums; new: flagged split sums)."""
import json, math, sys
sys.path.insert(0, "bench")
import torch
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import fp8_gemv, gemv_fusion, int4_gemv, int4_mma
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.quantization.triton_gemms import packed_weight
try:
    from tokenmill.kernels.triton import fp8_mma
except ImportError:
    fp8_mma = None
TREE = sys.argv[1] if len(sys.argv) > 1 else ""


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


def fusion_for(name, inp, out, rows, device):
    kind = {"qkv": "norm", "o": "res", "gate_up": "norm", "down": "silu"}[name]
    x = torch.randn(rows, 2 * inp if kind == "silu" else inp, dtype=torch.bfloat16, device=device)
    norm = torch.randn(inp, dtype=torch.bfloat16, device=device)
    res = torch.randn(rows, out, dtype=torch.bfloat16, device=device)
    return x, Fusion(norm=(norm, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu",
                     residual=None if kind == "norm" else res)


def layers_of(fmt, inp, shards, device):
    first = build(FORMATS[fmt](), inp, shards, device)
    size = sum(p.numel() * p.element_size() for p in first.parameters())
    return [first] + [build(FORMATS[fmt](), inp, shards, device) for _ in range(math.ceil(500e6 / size))], size


def main():
    device = torch.device("cuda")
    print(TREE, torch.cuda.get_device_name(), flush=True)
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        out_f = sum(shards)
        x, fusion = fusion_for(name, inp, out_f, 1, device)
        x8, fusion8 = fusion_for(name, inp, out_f, 8, device)
        v, errs = {}, {}
        layers, size = layers_of("fp8-channel", inp, shards, device)
        ws = [(la.weight, la.weight_scale) for la in layers]
        ref = fp8_gemv.gemv(x, *ws[0], fusion).float()
        v["fp8 gemv"] = timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion) for w, s in ws])
        v["fp8 gemv split"] = timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion, deep=False) for w, s in ws])
        errs["fp8 gemv split"] = (fp8_gemv.gemv(x, *ws[0], fusion, deep=False).float() - ref).abs().max().item()
        if fp8_mma is not None:
            for pps in (2, 4, 8):
                fp8_mma.PROGRAMS_PER_SM = pps
                v[f"fp8 mma pps{pps}"] = timed([lambda w=w, s=s: fp8_mma.gemv(x, w, s, fusion) for w, s in ws])
                errs[f"fp8 mma pps{pps}"] = (fp8_mma.gemv(x, *ws[0], fusion).float() - ref).abs().max().item()
                if name == "o":
                    v[f"fp8 mma own-x pps{pps}"] = timed([lambda w=w, s=s: fp8_mma.gemv(x, w, s, fusion, True) for w, s in ws])
            fp8_mma.PROGRAMS_PER_SM = 4
        del layers, ws
        torch.cuda.empty_cache()
        layers, size4 = layers_of("awq", inp, shards, device)
        packed = [packed_weight(la) for la in layers]
        v["int4 gemv"] = timed([lambda p=p: int4_gemv.gemv(x, p, fusion) for p in packed])
        gemv_fusion.SPLIT_PROGRAMS_PER_SM = 4
        v["int4 gemv pps4"] = timed([lambda p=p: int4_gemv.gemv(x, p, fusion) for p in packed])
        gemv_fusion.SPLIT_PROGRAMS_PER_SM = 2
        v["int4 mma 8 rows"] = timed([lambda p=p: int4_mma.gemv(x8, p, fusion8) for p in packed])
        del layers, packed
        torch.cuda.empty_cache()
        for key, us in v.items():
            print(json.dumps({"tree": TREE, "proj": name, "variant": key, "us": round(us, 2),
                              "max_abs_diff_vs_fp8_gemv": errs.get(key)}), flush=True)
            totals[key] = totals.get(key, 0) + us
    for key, us in totals.items():
        print(f"TOTAL {TREE} {key:24s} {us:7.2f} us/layer", flush=True)


if __name__ == "__main__":
    main()
