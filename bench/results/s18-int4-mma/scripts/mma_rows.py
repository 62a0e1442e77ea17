"""Tree 4-bit GEMV (int4_gemv) against the tensor-core GEMV (int4_mma) at 1-16 token rows, Qwen3-8B
projections with the model's fusions, HBM-cold rotation in one CUDA graph; plus mma launch-shape variants."""
import math, sys, json
sys.path.insert(0, "bench")
import torch
from quant_gemm import FORMATS, build, projections
from quant_gemv_hbm import time_launches, weight_bytes, ROTATED_BYTES, FUSIONS, bf16_call
from tokenmill.kernels.triton import activation, int4_gemv, int4_mma, norm as norm_kernels
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.quantization.triton_gemms import packed_weight

dev = torch.device("cuda")
torch.manual_seed(0)
print(torch.cuda.get_device_name(dev), flush=True)
ROWS = [int(r) for r in (sys.argv[1] if len(sys.argv) > 1 else "1,2,4,8,16").split(",")]
SHAPES = {}
sums = {}
for name, (inp, shards) in projections("qwen3-8b").items():
    first = build(FORMATS["awq"](), inp, shards, dev)
    size = weight_bytes(first)
    copies = max(2, math.ceil(ROTATED_BYTES / size))
    layers = [first] + [build(FORMATS["awq"](), inp, shards, dev) for _ in range(copies - 1)]
    packed = [packed_weight(l) for l in layers]
    kind = FUSIONS[name]
    n = sum(shards)
    for rows in ROWS:
        x = torch.randn(rows, 2 * inp if kind == "silu" else inp, dtype=torch.bfloat16, device=dev)
        norm = torch.randn(inp, dtype=torch.bfloat16, device=dev)
        residual = torch.randn(rows, n, dtype=torch.bfloat16, device=dev)
        fusion = Fusion(norm=(norm, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu",
                        residual=residual if kind != "norm" else None)
        variants = {"tree": lambda p: (lambda: int4_gemv.gemv(x, p, fusion))}
        if rows >= 2:
            variants["mma"] = lambda p: (lambda: int4_mma.gemv(x, p, fusion))

        for label, make in variants.items():
            try:
                us = time_launches([make(p) for p in packed])
            except Exception as exc:  # noqa: BLE001
                print(json.dumps(dict(projection=name, rows=rows, variant=label, error=str(exc)[:300])), flush=True)
                continue
            line = dict(projection=name, rows=rows, variant=label, us=round(us, 2), tb_per_s=round(size / us / 1e6, 3))
            print(json.dumps(line), flush=True)
            sums[(rows, label)] = sums.get((rows, label), 0.0) + us
    del layers, packed
    torch.cuda.empty_cache()
for (rows, label), us in sorted(sums.items()):
    print(f"rows {rows:2d} {label:16s} per layer {us:7.2f} us (projections without that variant: not counted)")
