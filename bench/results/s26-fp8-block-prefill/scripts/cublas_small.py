"""Probe (s26): the FP8 128 x 128 block GEMM route per token count, Triton kernel (cublas=False) against
cuBLAS's block-scaled GEMM (cublas=True), Qwen3-8B's four projections summed, weights rotated (> L2)."""
import math, sys
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s19")
import torch
from f8mma_probe import timed
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import fp8_gemm

dev = torch.device("cuda")
print(torch.cuda.get_device_name(), "has_cublas_blocks", fp8_gemm.has_cublas_blocks(dev), flush=True)
tokens = (2, 4, 8, 16, 32, 64, 128, 256, 512, 2048)
sums = {m: [0.0, 0.0] for m in tokens}
for name, (inp, shards) in projections("qwen3-8b").items():
    first = build(FORMATS["fp8-block"](), inp, shards, dev)
    size = sum(t.numel() * t.element_size() for t in first.parameters())
    layers = [first] + [build(FORMATS["fp8-block"](), inp, shards, dev) for _ in range(max(1, math.ceil(400e6 / size) - 1))]
    for m in tokens:
        x = torch.randn(m, inp, dtype=torch.bfloat16, device=dev)
        for i, cublas in enumerate((False, True)):
            sums[m][i] += timed([lambda la=la: fp8_gemm.fp8_block_gemm(x, la.weight, la.weight_scale_inv, (128, 128), cublas=cublas)
                                 for la in layers])
    del layers
    torch.cuda.empty_cache()
for m, (tri, cub) in sums.items():
    print(f"tokens {m:5d}: triton {tri:8.1f} us  cublas {cub:8.1f} us  ({tri / cub:.2f}x)", flush=True)
