"""Probe (s25 L): fp8_gemv launch shapes under register caps, Qwen3-8B gate|up and q|k|v at one token,
fused, weights rotated through > 8x L2 in one graph."""
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


class Capped:
    def __init__(self, kernel):
        self.kernel, self.cap = kernel, "tree"

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(**kw):
            if self.cap != "tree":
                kw.pop("maxnreg", None)
                if self.cap:
                    kw["maxnreg"] = self.cap
            return launch(**kw)
        return run


capped = Capped(fp8_gemv._fp8_gemv_kernel)
fp8_gemv._fp8_gemv_kernel = capped
dev = torch.device("cuda")
print(torch.cuda.get_device_name(), flush=True)
for name in ("gate_up", "qkv"):
    inp, shards = projections("qwen3-8b")[name]
    n = sum(shards)
    first = build(FORMATS["fp8-channel"](), inp, shards, dev)
    size = sum(t.numel() * t.element_size() for t in first.parameters())
    packed = [packed_weight(first)] + [packed_weight(build(FORMATS["fp8-channel"](), inp, shards, dev))
                                       for _ in range(math.ceil(500e6 / size))]
    x, fusion = fusion_for(name, inp, n, dev)
    ref = fp8_gemv.gemv(x, packed[0].weight, packed[0].scales, fusion).float()
    variants = [("tree", {})]
    for bn, bk, w in itertools.product((8, 16, 32), (256, 512, 1024), (2, 4, 8)):
        r = bn * bk // 4 // (32 * w)
        if 4 <= r <= 64:
            for cap in (None, 64, 72, 80, 96, 112, 128):
                variants.append((cap, dict(block_n=bn, block_k=bk, num_warps=w)))
    best = []
    for cap, kw in variants:
        capped.cap = cap
        key = f"cap{cap} " + " ".join(f"{k}{v}" for k, v in kw.items())
        try:
            same = torch.equal(fp8_gemv.gemv(x, packed[0].weight, packed[0].scales, fusion, **kw).float(), ref)
            us = timed([lambda q=q: fp8_gemv.gemv(x, q.weight, q.scales, fusion, **kw) for q in packed])
        except Exception as e:  # noqa: BLE001
            print(name, key, "failed", repr(e)[:200], flush=True)
            continue
        best.append((us, key))
        print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "same_bits": same}), flush=True)
    best.sort()
    print("BEST", name, json.dumps([(round(u, 2), k) for u, k in best[:6]]), flush=True)
    del packed
    torch.cuda.empty_cache()
