"""Session 10: quantized decode GEMVs of one Qwen3-8B layer with Triton's loop pipeliner (tl.range num_stages)
against the tree's kernels; each variant checked against the dequantized reference first. Then 8B single-stream
decode step for the tree and the best variant of each format (in-process, default shapes monkeypatched)."""
import json, math, sys, time
import torch
sys.path.insert(0, "bench")
from quant_gemm import FORMATS, build, projections
from quant_gemv_hbm import FUSIONS, ROTATED_BYTES, time_launches, weight_bytes, bf16_call
from tokenmill.kernels.triton import quant_gemv, int4_gemv, gemv_fusion
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.kernels.triton.split_k import num_sms, widest_covering_tile
from tokenmill.quantization.triton_gemms import packed_weight

dev = torch.device("cuda")
SMS = num_sms(dev)
sys.path.insert(0, '.k4')
from s10_gemv_setters import *
from s10_gemv_setters import ORIG_DEFAULT
def layer_times(fmt, variants, setter):
    out = {v: {} for v in variants}
    for name, (inp, shards) in projections("qwen3-8b").items():
        first = build(FORMATS[fmt](), inp, shards, dev)
        size = weight_bytes(first)
        copies = max(2, math.ceil(ROTATED_BYTES / size))
        layers = [first] + [build(FORMATS[fmt](), inp, shards, dev) for _ in range(copies - 1)]
        kind = FUSIONS[name]
        x = torch.randn(1, 2 * inp if kind == "silu" else inp, dtype=torch.bfloat16, device=dev)
        norm = torch.randn(inp, dtype=torch.bfloat16, device=dev)
        residual = torch.randn(1, sum(shards), dtype=torch.bfloat16, device=dev)
        if fmt == "bf16":
            out["tree"][name] = time_launches([bf16_call(kind, x, norm, residual, la.weight) for la in layers])
            continue
        fusion = Fusion(norm=(norm, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu",
                        residual=residual if kind != "norm" else None)
        packed = [packed_weight(la) for la in layers]
        ref = None
        for rep in range(2):
            for v in variants:
                setter(v)
                y = quant_gemv.gemv(x, packed[0], fusion).float()
                if ref is None:
                    ref = y
                err = ((y - ref).abs().max() / ref.abs().max()).item()
                if err > 0.02:
                    print(f"  !! {fmt} {name} {v}: differs from tree by {err:.4f}", flush=True)
                t = time_launches([lambda p=p: quant_gemv.gemv(x, p, fusion) for p in packed])
                out[v][name] = min(out[v].get(name, 1e9), t)
        del layers, packed
        torch.cuda.empty_cache()
    return out

results = {}
for fmt, variants, setter in (("bf16", ["tree"], None), ("fp8-channel", list(BYTE_VARIANTS), set_byte),
                              ("int8", list(BYTE_VARIANTS), set_byte), ("awq", list(INT4_VARIANTS), set_int4)):
    t0 = time.time()
    r = layer_times(fmt, variants, setter)
    results[fmt] = r
    for v, per in r.items():
        print(f"{fmt:12s} {v:16s} layer {sum(per.values()):7.2f} us  " + ", ".join(f"{k} {t:.2f}" for k, t in per.items()), flush=True)
    print(f"  ({time.time() - t0:.0f} s)", flush=True)
    quant_gemv.default_shape = ORIG_DEFAULT
    set_int4("tree")
json.dump(results, open(sys.argv[1], "w"), indent=1)
best = {f: min(r, key=lambda v: sum(r[v].values())) for f, r in results.items()}
print("best", best, flush=True)
json.dump(best, open(sys.argv[1] + ".best", "w"))
