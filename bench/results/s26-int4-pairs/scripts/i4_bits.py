"""Probe (s26): hash of int4_gemv's outputs (Qwen3-8B projections, fused, fixed seed), 1 row: run under
two trees; equal hashes = bit-identical kernels."""
import hashlib, sys
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s19")
import torch
from layout_probe import fusion_for
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import int4_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.quantization.triton_gemms import packed_weight
dev = torch.device("cuda")
for name, (inp, shards) in projections("qwen3-8b").items():
    torch.manual_seed(0)
    p = packed_weight(build(FORMATS["awq"](), inp, shards, dev))
    x, fusion = fusion_for(name, inp, sum(shards), dev)
    h = hashlib.sha256()
    h.update(int4_gemv.gemv(x, p, fusion).cpu().view(torch.int16).numpy().tobytes())
    for rows in (2, 4):
        xr = torch.randn(rows, inp, dtype=torch.bfloat16, device=dev)
        h.update(int4_gemv.gemv(xr, p, NO_FUSION).cpu().view(torch.int16).numpy().tobytes())
    print(sys.argv[1], name, h.hexdigest()[:16], flush=True)
