"""Tensor-core 4-bit GEMV prototype: checked against the AWQ layer's PyTorch apply, then timed against the
tree's int4 GEMV on Qwen3-8B's projections (HBM-honest rotation in one CUDA graph)."""
import math, sys, json, itertools
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s17")
import torch
from quant_gemm import FORMATS, build, projections
from quant_gemv_hbm import time_launches, weight_bytes, ROTATED_BYTES
from tokenmill.kernels.triton import quant_gemv, skinny_gemm, int4_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.quantization.triton_gemms import packed_weight
import int4_mma

dev = torch.device("cuda")
torch.manual_seed(0)
results = []
total = {}
for name, (inp, shards) in projections("qwen3-8b").items():
    first = build(FORMATS["awq"](), inp, shards, dev)
    pw = packed_weight(first)
    blk = int4_mma.block(pw.weight)
    for rows in (1, 3, 8):
        x = torch.randn(rows, inp, dtype=torch.bfloat16, device=dev)
        ref = first(x).float()
        tree = int4_gemv.gemv(x, pw, NO_FUSION).float()
        scale = ref.abs().max().item()
        for warps, pps, b, wn in ((1, 8, 0, 0), (2, 4, 1, 1)):
            got = int4_mma.gemv(x, pw, warps=warps, programs_per_sm=pps, blocked=blk if b else None, warp_n=bool(wn), depth=2).float()
            err = (got - ref).abs().max().item() / scale
            print(json.dumps(dict(check=name, rows=rows, warps=warps, pps=pps, blocked=b, warp_n=wn, mma_err=round(err, 5),
                                  tree_err=round((tree - ref).abs().max().item() / scale, 5))), flush=True)
    size = weight_bytes(first)
    copies = max(2, math.ceil(ROTATED_BYTES / size))
    layers = [first] + [build(FORMATS["awq"](), inp, shards, dev) for _ in range(copies - 1)]
    packed = [packed_weight(l) for l in layers]
    blocks = [int4_mma.block(p.weight) for p in packed]
    x = torch.randn(1, inp, dtype=torch.bfloat16, device=dev)
    variants = {"tree": lambda p, b: (lambda: int4_gemv.gemv(x, p, NO_FUSION))}
    for d in (1, 2):
        for warps, pps in ((1, 4), (1, 8), (1, 16)):
            variants[f"mma d{d} w{warps} pps{pps}"] = lambda p, b, w=warps, s=pps, d=d: (lambda: int4_mma.gemv(x, p, warps=w, programs_per_sm=s, depth=d))
        for warps, pps in ((2, 4), (2, 8), (4, 4)):
            variants[f"blocked warp_n d{d} w{warps} pps{pps}"] = lambda p, b, w=warps, s=pps, d=d: (lambda: int4_mma.gemv(x, p, warps=w, programs_per_sm=s, blocked=b, warp_n=True, depth=d))
    for label, make in variants.items():
        try:
            us = time_launches([make(p, b) for p, b in zip(packed, blocks)])
        except Exception as exc:  # noqa: BLE001
            print("fail", label, repr(exc)[:200]); continue
        line = dict(projection=name, variant=label, us=round(us, 2), tb_per_s=round(size / us / 1e6, 3))
        print(json.dumps(line), flush=True)
        results.append(line)
        total.setdefault(label, 0.0)
        total[label] += us
    del layers, packed, blocks
    torch.cuda.empty_cache()
best = {}
for line in results:
    if line["variant"] == "tree":
        continue
    b = best.get(line["projection"])
    if b is None or line["us"] < b["us"]:
        best[line["projection"]] = line
print("per-layer sums:", json.dumps({k: round(v, 2) for k, v in total.items()}))
print("best per projection:", json.dumps({k: (v["variant"], v["us"]) for k, v in best.items()}),
      "sum", round(sum(v["us"] for v in best.values()), 2))
