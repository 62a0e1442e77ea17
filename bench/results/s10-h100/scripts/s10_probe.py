"""Session 10 call B: byte GEMV probe variants (.k4/qv10.py) on one Qwen3-8B layer, fp8 and int8, checked against the
tree (relative max difference), timed as bench/quant_gemv_hbm.py times them (rotating copies, one CUDA graph)."""
import json, math, sys
import torch
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4")
from quant_gemm import FORMATS, build, projections
from quant_gemv_hbm import FUSIONS, ROTATED_BYTES, time_launches, weight_bytes
from tokenmill.kernels.triton import quant_gemv
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.quantization.triton_gemms import packed_weight
import qv10

dev = torch.device("cuda")
VARIANTS = {  # name -> kwargs of qv10.gemv (None: the tree)
    "tree": None, "p0": dict(variant=0), "p1-norm2d": dict(variant=1), "p1-r80": dict(variant=1, maxnreg=80),
    "p2-loads-only": dict(variant=2), "p3-dot-s1": dict(variant=3, stages=1), "p3-dot-s3": dict(variant=3, stages=3),
    "p3-dot-bn64-s3": dict(variant=3, widest=64, tile_bytes=32768, stages=3), "p3-dot-bn64-s1": dict(variant=3, widest=64, stages=1),
    "p3-dot-t16k-s4": dict(variant=3, tile_bytes=16384, stages=4),
}
res = {}
for fmt in ("fp8-channel", "int8"):
    out = {v: {} for v in VARIANTS}
    for name, (inp, shards) in projections("qwen3-8b").items():
        first = build(FORMATS[fmt](), inp, shards, dev)
        size = weight_bytes(first)
        layers = [first] + [build(FORMATS[fmt](), inp, shards, dev) for _ in range(max(2, math.ceil(ROTATED_BYTES / size)) - 1)]
        kind = FUSIONS[name]
        x = torch.randn(1, 2 * inp if kind == "silu" else inp, dtype=torch.bfloat16, device=dev)
        norm = torch.randn(inp, dtype=torch.bfloat16, device=dev)
        residual = torch.randn(1, sum(shards), dtype=torch.bfloat16, device=dev)
        fusion = Fusion(norm=(norm, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu", residual=residual if kind != "norm" else None)
        packed = [packed_weight(la) for la in layers]
        ref = quant_gemv.gemv(x, packed[0], fusion).float()
        calls = {}
        for v, kw in VARIANTS.items():
            f = (lambda p, kw=kw: quant_gemv.gemv(x, p, fusion)) if kw is None else (lambda p, kw=kw: qv10.gemv(x, p, fusion, **kw))
            try:
                y = f(packed[0]).float()
            except Exception as e:
                print(f"  !! {fmt} {name} {v}: {type(e).__name__}: {str(e)[:200]}", flush=True); continue
            err = ((y - ref).abs().max() / ref.abs().max()).item()
            if err > 0.01 and "loads" not in v:
                print(f"  !! {fmt} {name} {v}: differs from the tree by {err:.4f}", flush=True)
            calls[v] = f
        for rep in range(2):
            for v, f in calls.items():
                t = time_launches([lambda p=p, f=f: f(p) for p in packed])
                out[v][name] = min(out[v].get(name, 1e9), t)
        del layers, packed; torch.cuda.empty_cache()
    res[fmt] = out
    for v, per in out.items():
        if per:
            print(f"{fmt:12s} {v:16s} layer {sum(per.values()):7.2f} us  " + ", ".join(f"{k} {t:.2f}" for k, t in per.items()), flush=True)
json.dump(res, open(sys.argv[1], "w"), indent=1)
