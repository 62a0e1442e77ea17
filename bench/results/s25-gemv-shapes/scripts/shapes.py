"""Probe (s25 C): the tree's 4-bit GEMV per Qwen3-8B projection, with its fusion, weights rotated
through > 8x L2 in one graph: the default launch (either tree) and, where the tree has `Int4Shape`,
every shape of a sweep."""
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

from tokenmill.kernels.triton import int4_gemv
from tokenmill.quantization.triton_gemms import packed_weight

tag = sys.argv[1]
dev = torch.device("cuda")
print(tag, torch.cuda.get_device_name(), flush=True)
total = {}
for name, (inp, shards) in projections("qwen3-8b").items():
    n = sum(shards)
    first = build(FORMATS["awq"](), inp, shards, dev)
    size = sum(t.numel() * t.element_size() for t in first.parameters())
    packed = [packed_weight(first)] + [packed_weight(build(FORMATS["awq"](), inp, shards, dev))
                                       for _ in range(math.ceil(500e6 / size))]
    x, fusion = fusion_for(name, inp, n, dev)
    ref = int4_gemv.gemv(x, packed[0], fusion).float()
    shapes = {"default": None}
    if hasattr(int4_gemv, "Int4Shape") and "nosweep" not in sys.argv:
        for bn, g in itertools.product((16, 32, 64), (1, 2, 4)):
            if inp % (g * 128) == 0:
                shapes[f"bn{bn} g{g}"] = int4_gemv.Int4Shape(bn, g)
    for key, shape in shapes.items():
        try:
            got = int4_gemv.gemv(x, packed[0], fusion, shape).float() if shape else ref
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            us = timed([lambda q=q: int4_gemv.gemv(x, q, fusion, shape) if shape else int4_gemv.gemv(x, q, fusion)
                        for q in packed])
        except Exception as e:  # noqa: BLE001
            print(name, key, "failed", repr(e)[:300], flush=True)
            continue
        total.setdefault(key, {})[name] = us
        print(json.dumps({"tag": tag, "proj": name, "shape": key, "us": round(us, 2), "TBps": round(size / us / 1e6, 2),
                          "err": round(err, 5)}), flush=True)
    del packed
    torch.cuda.empty_cache()
print(tag, "default", json.dumps({k: round(v, 2) for k, v in total["default"].items()}),
      f"sum {sum(total['default'].values()):.2f}", flush=True)
best = {}
for key, per in total.items():
    for proj, us in per.items():
        if key != "default" and (proj not in best or us < best[proj][1]):
            best[proj] = (key, round(us, 2))
if best:
    print(tag, "BEST", json.dumps(best), f"sum {sum(b[1] for b in best.values()):.2f}", flush=True)
