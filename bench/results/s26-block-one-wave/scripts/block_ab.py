"""Probe (s26): the tree's fp8 block GEMV route (quant_gemv.fp8_block_gemv, 128 x 128) per Qwen3-8B projection
at 1 and 2 token rows, fused, weights rotated through > 8x L2 in one graph; run under each tree."""
import json, math, sys
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s19")
import torch
from f8mma_probe import timed
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import quant_gemv
from tokenmill.kernels.triton.gemv_fusion import Fusion

tag = sys.argv[1]
dev = torch.device("cuda")
total = {}
for name, (inp, shards) in projections("qwen3-8b").items():
    n = sum(shards)
    first = build(FORMATS["fp8-block"](), inp, shards, dev)
    size = sum(t.numel() * t.element_size() for t in first.parameters())
    layers = [first] + [build(FORMATS["fp8-block"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
    for rows in (1, 2):
        kind = {"qkv": "norm", "o": "res", "gate_up": "norm", "down": "silu"}[name]
        x = torch.randn(rows, 2 * inp if kind == "silu" else inp, dtype=torch.bfloat16, device=dev)
        norm = torch.randn(inp, dtype=torch.bfloat16, device=dev)
        res = torch.randn(rows, n, dtype=torch.bfloat16, device=dev)
        fusion = Fusion(norm=(norm, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu",
                        residual=None if kind == "norm" else res)
        us = timed([lambda la=la: quant_gemv.fp8_block_gemv(x, la.weight, la.weight_scale_inv, (128, 128), fusion)
                    for la in layers])
        total.setdefault(rows, {})[name] = round(us, 2)
    del layers
    torch.cuda.empty_cache()
for rows, per in total.items():
    print(tag, f"rows {rows}", json.dumps(per), f"sum {sum(per.values()):.2f}", flush=True)
