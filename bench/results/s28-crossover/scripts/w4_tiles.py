"""weight_only_gemm's tile shapes for 4-bit AWQ (Qwen3-8B layer, quantized at load) at medium batches, against
the dense route (weight dequantized, then cuBLAS): us a layer (4 projections), CUDA graphs; each tile's
largest error against the layer's reference apply. One JSON line per token count."""
import json
import sys

import torch

sys.path.insert(0, "bench")
from quant_gemm import build, max_relative_error, projections, time_call  # noqa: E402

from tokenmill.kernels.triton.weight_only_gemm import Tiles, weight_only_gemm  # noqa: E402
from tokenmill.quantization.awq import AwqMethod  # noqa: E402
from tokenmill.quantization.triton_gemms import dequantized_dense, packed_weight, use_triton_gemms  # noqa: E402

TILES = [
    (16, 64, 128, 4), (64, 64, 64, 4), (128, 128, 32, 4),  # the tree's three
    (32, 64, 128, 4), (32, 128, 128, 4), (64, 64, 128, 4), (64, 128, 128, 4), (64, 128, 64, 4),
    (64, 128, 128, 8), (128, 128, 64, 8), (128, 128, 128, 8), (128, 64, 128, 4),
]
device = torch.device("cuda")
torch.manual_seed(0)
layers = []
for inp, shards in projections(sys.argv[1] if len(sys.argv) > 1 else "qwen3-8b").values():
    layer = build(AwqMethod(128, checkpoint_is_awq=False), inp, shards, device)
    use_triton_gemms(layer)
    layers.append((layer, inp))
tokens_list = [int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "32,96,358").split(",")]
for tokens in tokens_list:
    xs = [torch.randn(tokens, inp, dtype=torch.bfloat16, device=device) for _, inp in layers]
    refs = [layer.method.apply(layer, x, None).float() for (layer, _), x in zip(layers, xs)]
    row = {"tokens": tokens}
    row["dense_us"] = round(sum(time_call(lambda l=l, x=x: dequantized_dense(l, x), repeat=20) for (l, _), x in zip(layers, xs)), 1)
    for t in TILES:
        tiles = Tiles(*t)
        try:
            err = max(max_relative_error(weight_only_gemm(x, packed_weight(l), tiles=tiles).float(), r) for (l, _), x, r in zip(layers, xs, refs))
            us = sum(time_call(lambda l=l, x=x: weight_only_gemm(x, packed_weight(l), tiles=tiles), repeat=20) for (l, _), x in zip(layers, xs))
            row["_".join(map(str, t))] = [round(us, 1), round(err, 4)]
        except Exception as e:  # noqa: BLE001
            row["_".join(map(str, t))] = str(e)[:60]
    print(json.dumps(row), flush=True)
