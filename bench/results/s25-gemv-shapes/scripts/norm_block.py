"""Probe (s25 G): the RMSNorm prologue's sum of squares in steps of NORM_BLOCK (1024 shipped) or in
fewer, wider steps, for the fp8 and 4-bit GEMVs of q|k|v and gate|up (Qwen3-8B, weights rotated through
> 8x L2, one graph)."""
import json
import math
import sys

sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch
from f8mma_probe import timed
from layout_probe import fusion_for
from quant_gemm import FORMATS, build, projections

from tokenmill.kernels.triton import gemv_fusion, quant_gemv
from tokenmill.quantization.triton_gemms import packed_weight

dev = torch.device("cuda")
print(torch.cuda.get_device_name(), flush=True)
for fmt in ("fp8-channel", "awq"):
    for name in ("qkv", "gate_up"):
        inp, shards = projections("qwen3-8b")[name]
        n = sum(shards)
        first = build(FORMATS[fmt](), inp, shards, dev)
        size = sum(t.numel() * t.element_size() for t in first.parameters())
        packed = [packed_weight(first)] + [packed_weight(build(FORMATS[fmt](), inp, shards, dev))
                                           for _ in range(math.ceil(500e6 / size))]
        x, fusion = fusion_for(name, inp, n, dev)
        gemv_fusion.NORM_BLOCK = 1024
        ref = quant_gemv.gemv(x, packed[0], fusion).float()
        res = {}
        for rep in range(2):
            for nb in (1024, 2048, 4096):
                gemv_fusion.NORM_BLOCK = nb
                got = quant_gemv.gemv(x, packed[0], fusion).float()
                same = torch.equal(got, ref)
                us = timed([lambda q=q: quant_gemv.gemv(x, q, fusion) for q in packed])
                res.setdefault(nb, []).append(round(us, 2))
                print(json.dumps({"fmt": fmt, "proj": name, "norm_block": nb, "us": round(us, 2), "same_bits": same}), flush=True)
        print("SUM", fmt, name, json.dumps(res), flush=True)
        del packed
        torch.cuda.empty_cache()
gemv_fusion.NORM_BLOCK = 1024
