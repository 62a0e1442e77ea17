"""Probe (s25 B): one launch each, under ncu: the 4-bit GEMV (tree, K-packed variant, N-major variant)
and fp8_gemv on Qwen3-8B's gate|up and down at one token, plain input."""
import sys

sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s25")
sys.path.insert(0, ".k4/s19")
import torch
import i4_tiles as P
from quant_gemm import FORMATS, build, projections

from tokenmill.kernels.triton import fp8_gemv, int4_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.quantization.triton_gemms import packed_weight

dev = torch.device("cuda")
for name in ("gate_up", "down"):
    inp, shards = projections("qwen3-8b")[name]
    n = sum(shards)
    p = packed_weight(build(FORMATS["awq"](), inp, shards, dev))
    wt = p.weight.t().contiguous()
    f8 = build(FORMATS["fp8-channel"](), inp, shards, dev)
    x = torch.randn(1, inp, dtype=torch.bfloat16, device=dev)
    out = torch.empty(1, n, dtype=torch.bfloat16, device=dev)
    int4_gemv.gemv(x, p, NO_FUSION)
    if name == "gate_up":
        P.launch("nm", x, p, wt, out, 16, 8, 1, 1, 4)
        P.launch("kp", x, p, wt, out, 64, 2, 2, 1, 4)
    else:
        P.launch("nm", x, p, wt, out, 8, 16, 1, 1, 4)
        P.launch("kp", x, p, wt, out, 32, 4, 1, 4, 4)
    fp8_gemv.gemv(x, f8.weight, f8.weight_scale.float().reshape(-1).contiguous(), NO_FUSION)
    torch.cuda.synchronize()
