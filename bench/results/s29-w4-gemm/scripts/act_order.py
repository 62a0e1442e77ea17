"""weight_only_gemm on act-order GPTQ 4-bit weights (g_idx out of row order: the kernel reads a group per
input row): the tree this script's sys.path finds (TREE=old: .k4/s29/base, else the working tree),
Qwen3-8B layer (4 projections), us per layer at each token count, and the largest error against the
reference dequantization. One JSON line."""
import json
import os
import sys

sys.path.insert(0, ".k4/s29/base" if os.environ.get("TREE") == "old" else ".")
sys.path.insert(1, "bench")
import torch  # noqa: E402
from quant_gemm import build, max_relative_error, projections, time_call  # noqa: E402

import tokenmill  # noqa: E402
from tokenmill.kernels.triton.weight_only_gemm import dequantize, weight_only_gemm  # noqa: E402
from tokenmill.quantization.gptq import GptqMethod  # noqa: E402
from tokenmill.quantization.triton_gemms import packed_weight, use_triton_gemms  # noqa: E402

device = torch.device("cuda")
torch.manual_seed(0)
row = {"tree": os.path.dirname(tokenmill.__file__)}
layers = []
for inp, shards in projections("qwen3-8b").values():
    layer = build(GptqMethod(4, 128, checkpoint_is_gptq=False), inp, shards, device)
    use_triton_gemms(layer)
    layer.g_idx.data = layer.g_idx.data[torch.randperm(inp, device=device)]  # groups out of row order
    pw = packed_weight(layer)
    assert not pw.groups_in_row_order
    layers.append((inp, pw, dequantize(pw, torch.float32)))
for tokens in (4, 16, 32, 64, 128, 256):
    xs = [torch.randn(tokens, inp, dtype=torch.bfloat16, device=device) for inp, _, _ in layers]
    err = max(max_relative_error(weight_only_gemm(x, p).float(), x.float() @ w) for (_, p, w), x in zip(layers, xs))
    us = sum(time_call(lambda p=p, x=x: weight_only_gemm(x, p), repeat=20) for (_, p, _), x in zip(layers, xs))
    row[tokens] = [round(us, 1), round(err, 4)]
print(json.dumps(row), flush=True)
