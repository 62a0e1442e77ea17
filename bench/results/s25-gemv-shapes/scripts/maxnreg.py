"""Probe (s25 H): fp8_gemv and int4_gemv per Qwen3-8B projection (fused, weights rotated through > 8x
L2, one graph) with a register cap (`maxnreg`) for more programs per SM: shipped (no cap) vs 64/72/80/88."""
import json
import math
import sys

sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch
from f8mma_probe import timed
from layout_probe import fusion_for
from quant_gemm import FORMATS, build, projections

from tokenmill.kernels.triton import fp8_gemv, int4_gemv, quant_gemv
from tokenmill.quantization.triton_gemms import packed_weight


class Capped:
    def __init__(self, kernel):
        self.kernel, self.cap = kernel, None

    def __getitem__(self, grid):
        launch = self.kernel[grid]
        return lambda **kw: launch(**kw, **({"maxnreg": self.cap} if self.cap else {}))


dev = torch.device("cuda")
print(torch.cuda.get_device_name(), flush=True)
caps = {"fp8-channel": Capped(fp8_gemv._fp8_gemv_kernel), "awq": Capped(int4_gemv._int4_gemv_kernel)}
fp8_gemv._fp8_gemv_kernel, int4_gemv._int4_gemv_kernel = caps["fp8-channel"], caps["awq"]
for fmt in ("fp8-channel", "awq"):
    for name, (inp, shards) in projections("qwen3-8b").items():
        n = sum(shards)
        first = build(FORMATS[fmt](), inp, shards, dev)
        size = sum(t.numel() * t.element_size() for t in first.parameters())
        packed = [packed_weight(first)] + [packed_weight(build(FORMATS[fmt](), inp, shards, dev))
                                           for _ in range(math.ceil(500e6 / size))]
        x, fusion = fusion_for(name, inp, n, dev)
        ref = quant_gemv.gemv(x, packed[0], fusion).float()
        res = {}
        for rep in range(2):
            for cap in (None, 64, 72, 80, 88):
                caps[fmt].cap = cap
                try:
                    same = torch.equal(quant_gemv.gemv(x, packed[0], fusion).float(), ref)
                    us = timed([lambda q=q: quant_gemv.gemv(x, q, fusion) for q in packed])
                except Exception as e:  # noqa: BLE001
                    print(fmt, name, cap, "failed", repr(e)[:200], flush=True)
                    continue
                res.setdefault(str(cap), []).append(round(us, 2))
                if not same:
                    print(fmt, name, cap, "bits differ", flush=True)
        caps[fmt].cap = None
        print("SUM", fmt, name, json.dumps(res), flush=True)
        del packed
        torch.cuda.empty_cache()
