"""Probe (s25 F): fp8_gemv (per channel) per Qwen3-8B projection, with its fusion, weights rotated
through > 8x L2 in one graph: the default launch and a sweep of (block_n, block_k, num_warps, deep)."""
import itertools
import json
import math
import sys

sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch
from f8mma_probe import timed
from layout_probe import fusion_for
from quant_gemm import FORMATS, build, projections

from tokenmill.kernels.triton import fp8_gemv
from tokenmill.quantization.triton_gemms import packed_weight

dev = torch.device("cuda")
print(torch.cuda.get_device_name(), flush=True)
total = {}
for name, (inp, shards) in projections("qwen3-8b").items():
    n = sum(shards)
    first = build(FORMATS["fp8-channel"](), inp, shards, dev)
    size = sum(t.numel() * t.element_size() for t in first.parameters())
    packed = [packed_weight(first)] + [packed_weight(build(FORMATS["fp8-channel"](), inp, shards, dev))
                                       for _ in range(math.ceil(500e6 / size))]
    x, fusion = fusion_for(name, inp, n, dev)
    ref = fp8_gemv.gemv(x, packed[0].weight, packed[0].scales, fusion).float()
    shapes = {"default": {}}
    for bn, bk, w, deep in itertools.product((8, 16, 32), (256, 512, 1024), (2, 4, 8), (True, False)):
        if bn * bk // 4 // (32 * w) < 4 or bn * bk // 4 // (32 * w) > 64:
            continue
        if not deep and name in ("qkv", "gate_up"):
            continue
        shapes[f"bn{bn} bk{bk} w{w}{' deep' if deep else ''}"] = dict(block_n=bn, block_k=bk, num_warps=w, deep=deep)
    for key, kw in shapes.items():
        try:
            got = fp8_gemv.gemv(x, packed[0].weight, packed[0].scales, fusion, **kw).float()
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            us = timed([lambda q=q: fp8_gemv.gemv(x, q.weight, q.scales, fusion, **kw) for q in packed])
        except Exception as e:  # noqa: BLE001
            print(name, key, "failed", repr(e)[:200], flush=True)
            continue
        total.setdefault(key, {})[name] = us
        print(json.dumps({"proj": name, "shape": key, "us": round(us, 2), "TBps": round(size / us / 1e6, 2),
                          "err": round(err, 5)}), flush=True)
    del packed
    torch.cuda.empty_cache()
print("default", json.dumps({k: round(v, 2) for k, v in total["default"].items()}),
      f"sum {sum(total['default'].values()):.2f}", flush=True)
best = {}
for key, per in total.items():
    for proj, us in per.items():
        if key != "default" and (proj not in best or us < best[proj][1]):
            best[proj] = (key, round(us, 2))
print("BEST", json.dumps(best), f"sum {sum(b[1] for b in best.values()):.2f}", flush=True)
