"""Tree 4-bit GEMV against the tensor-core prototype at 1, 2, 4 and 8 token rows (Qwen3-8B projections,
HBM-honest rotation), and the per-launch floor: the tree kernel on a one-group weight (4096 x 128)."""
import math, sys, json
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s17")
import torch
from quant_gemm import FORMATS, build, projections
from quant_gemv_hbm import time_launches, weight_bytes, ROTATED_BYTES
from tokenmill.kernels.triton import int4_gemv, skinny_gemm
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.quantization.triton_gemms import packed_weight
import int4_mma

dev = torch.device("cuda")
torch.manual_seed(0)
print(torch.cuda.get_device_name(dev))
sums = {}
for name, (inp, shards) in projections("qwen3-8b").items():
    first = build(FORMATS["awq"](), inp, shards, dev)
    size = weight_bytes(first)
    copies = max(2, math.ceil(ROTATED_BYTES / size))
    layers = [first] + [build(FORMATS["awq"](), inp, shards, dev) for _ in range(copies - 1)]
    packed = [packed_weight(l) for l in layers]
    blocks = [int4_mma.block(p.weight) for p in packed]
    for rows in (1, 2, 4, 8):
        x = torch.randn(rows, inp, dtype=torch.bfloat16, device=dev)
        variants = {
            "tree": lambda p, b: (lambda: int4_gemv.gemv(x, p, NO_FUSION)),
            "mma w1 pps8": lambda p, b: (lambda: int4_mma.gemv(x, p, warps=1, programs_per_sm=8)),
            "mma blocked warp_n w2 pps4": lambda p, b: (lambda: int4_mma.gemv(x, p, warps=2, programs_per_sm=4, blocked=b, warp_n=True)),
        }
        for label, make in variants.items():
            us = time_launches([make(p, b) for p, b in zip(packed, blocks)])
            line = dict(projection=name, rows=rows, variant=label, us=round(us, 2), tb_per_s=round(size / us / 1e6, 3))
            print(json.dumps(line), flush=True)
            sums[(rows, label)] = sums.get((rows, label), 0.0) + us
    del layers, packed, blocks
    torch.cuda.empty_cache()
for (rows, label), us in sorted(sums.items()):
    print(f"rows {rows} {label:28s} per layer {us:7.2f} us")
# per-launch floor: one group of 128 inputs, 4096 outputs, many copies (HBM-cold)
tiny = [build(FORMATS["awq"](), 128, [4096], dev) for _ in range(64)]
tp = [packed_weight(l) for l in tiny]
x = torch.randn(1, 128, dtype=torch.bfloat16, device=dev)
print("floor tree 4096x128:", round(time_launches([lambda p=p: int4_gemv.gemv(x, p, NO_FUSION) for p in tp]), 2), "us")
bf = [build(FORMATS["bf16"](), 128, [4096], dev).weight for _ in range(64)]
print("floor bf16 skinny 4096x128:", round(time_launches([lambda w=w: skinny_gemm.linear(x, w) for w in bf]), 2), "us")
