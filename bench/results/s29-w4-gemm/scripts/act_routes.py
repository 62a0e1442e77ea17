"""Act-order GPTQ (g_idx out of row order), 4- and 8-bit, Qwen3-8B layer (4 projections): each route the
table can pick (GEMV, Triton kernel, dense: dequantize + cuBLAS) at each token count, us per layer.
One JSON line per (bits, route)."""
import json
import sys

import torch

sys.path.insert(0, "bench")
from quant_gemm import build, projections, time_call  # noqa: E402

from tokenmill.kernels.triton.gemv_fusion import NO_FUSION  # noqa: E402
from tokenmill.quantization.gptq import GptqMethod  # noqa: E402
from tokenmill.quantization.triton_gemms import packed_weight, use_triton_gemms  # noqa: E402

device = torch.device("cuda")
torch.manual_seed(0)
for bits in (4, 8):
    layers = []
    for inp, shards in projections("qwen3-8b").values():
        layer = build(GptqMethod(bits, 128, checkpoint_is_gptq=False), inp, shards, device)
        layer.g_idx.data = layer.g_idx.data[torch.randperm(inp, device=device)]
        use_triton_gemms(layer)
        assert not packed_weight(layer).groups_in_row_order
        layers.append((layer, inp))
    gemm = layers[0][0].method.gemm
    routes = {"gemv": lambda l, x: gemm.gemv(l, x, NO_FUSION), "kernel": gemm.kernel, "dense": gemm.dense}
    for name, route in routes.items():
        row = {"bits": bits, "route": name, "key": gemm.table_key}
        for tokens in (1, 2, 4, 8, 16, 64, 128):
            if name == "gemv" and tokens > 8:
                continue
            xs = [torch.randn(tokens, inp, dtype=torch.bfloat16, device=device) for _, inp in layers]
            row[tokens] = round(sum(time_call(lambda l=l, x=x: route(l, x), repeat=20) for (l, _), x in zip(layers, xs)), 1)
        print(json.dumps(row), flush=True)
