"""Time the word/look-ahead fp8 GEMV against the tree's byte kernel, Qwen3-8B projections at one token."""
import itertools, json, math, sys
import torch
sys.path.insert(0, "bench")
from quant_gemm import FORMATS, build, projections
from quant_gemv_hbm import FUSIONS, ROTATED_BYTES, time_launches, weight_bytes
from tokenmill.kernels.triton import fp8_gemv, gemv_fusion, quant_gemv
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.quantization.triton_gemms import packed_weight

dev = torch.device("cuda")
preset = sys.argv[1] if len(sys.argv) > 1 else "qwen3-8b"
VARIANTS = [(16, 512, 4, 2, 1024), (16, 512, 4, 2, 2048), (16, 512, 4, 2, 4096), (8, 1024, 4, 1, 1024),
    (8, 1024, 4, 1, 4096), (16, 512, 4, 2, 512)]
out = []
totals = {}
for name, (inp, shards) in projections(preset).items():
    first = build(FORMATS["fp8-channel"](), inp, shards, dev)
    size = weight_bytes(first)
    copies = max(2, math.ceil(ROTATED_BYTES / size))
    packed = [packed_weight(first)] + [packed_weight(build(FORMATS["fp8-channel"](), inp, shards, dev)) for _ in range(copies - 1)]
    kind = FUSIONS[name]
    x = torch.randn(1, 2 * inp if kind == "silu" else inp, dtype=torch.bfloat16, device=dev)
    norm = torch.randn(inp, dtype=torch.bfloat16, device=dev)
    residual = torch.randn(1, sum(shards), dtype=torch.bfloat16, device=dev)
    fusion = Fusion(norm=(norm, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu", residual=residual if kind != "norm" else None)
    tree_shape = quant_gemv.default_shape(False, packed[0].out_features, dev)
    ref = quant_gemv.gemv(x, packed[0], fusion, tree_shape).float()
    def tree():
        return time_launches([lambda p=p: quant_gemv.gemv(x, p, fusion, tree_shape) for p in packed])
    def variant(bn, bk, w, pps, nb):
        gemv_fusion.NORM_BLOCK = nb
        gemv_fusion.SPLIT_PROGRAMS_PER_SM = pps
        got = fp8_gemv.gemv(x, packed[0].weight, packed[0].scales, fusion, bn, bk, w).float()
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        us = time_launches([lambda p=p: fp8_gemv.gemv(x, p.weight, p.scales, fusion, bn, bk, w) for p in packed])
        gemv_fusion.SPLIT_PROGRAMS_PER_SM = 2
        gemv_fusion.NORM_BLOCK = 1024
        return us, err
    results = {"tree": tree()}
    errs = {}
    for v in VARIANTS:
        try:
            results[str(v)], errs[str(v)] = variant(*v)
        except Exception as e:  # noqa
            print("fail", name, v, repr(e)[:300], flush=True)
    results["tree2"] = tree()
    for k, us in results.items():
        line = dict(projection=name, variant=k, us=round(us, 2), tb_per_s=round(size / us / 1e6, 3), err=errs.get(k))
        print(json.dumps(line), flush=True)
        out.append(line)
        totals[k] = totals.get(k, 0) + us
    torch.cuda.empty_cache()
for k, v in sorted(totals.items(), key=lambda kv: kv[1]):
    print(f"{k:24s} layer {v:8.2f} us")
json.dump({"device": torch.cuda.get_device_name(dev), "lines": out}, open(sys.argv[2] if len(sys.argv) > 2 else "/tmp/fp8probe.json", "w"), indent=1)
