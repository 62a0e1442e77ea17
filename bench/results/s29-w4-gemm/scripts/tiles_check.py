"""weight_only_gemm on the new tree: tiles_for's pick against a few other shapes (stages, widths), per
format (awq, gptq8, int8), Qwen3-8B layer (4 projections), us per layer; and the largest error against
the reference apply. One JSON line per (format, tokens)."""
import json
import os
import sys

import torch

sys.path.insert(0, "bench")
from quant_gemm import FORMATS, build, max_relative_error, projections, time_call  # noqa: E402

from tokenmill.kernels.triton.weight_only_gemm import Tiles, tiles_for, weight_only_gemm  # noqa: E402
from tokenmill.quantization.triton_gemms import packed_weight, use_triton_gemms  # noqa: E402

ALTERNATIVES = [Tiles(16, 64, 128, 4, 3), Tiles(16, 64, 64, 4, 4), Tiles(16, 128, 128, 4, 3), Tiles(16, 32, 128, 4, 4)] if os.environ.get("SMALL") else [Tiles(128, 64, 128, 4, 3), Tiles(128, 64, 128, 4, 2), Tiles(128, 128, 128, 8, 2),
                Tiles(64, 64, 128, 4, 2), Tiles(64, 128, 64, 4, 3), Tiles(128, 64, 64, 4, 3)]
device = torch.device("cuda")
torch.manual_seed(0)
for fmt in os.environ.get("FMTS", "awq,gptq8,int8").split(","):
    layers = []
    for inp, shards in projections("qwen3-8b").values():
        layer = build(FORMATS[fmt](), inp, shards, device)
        use_triton_gemms(layer)
        layers.append((layer, inp, packed_weight(layer)))
    for tokens in [int(t) for t in os.environ.get("TOKS", "16,32,64,96,128,192,256").split(",")]:
        xs = [torch.randn(tokens, inp, dtype=torch.bfloat16, device=device) for _, inp, _ in layers]
        refs = [l.method.apply(l, x, None).float() for (l, _, _), x in zip(layers, xs)]
        row = {"format": fmt, "tokens": tokens, "default": str(tiles_for(tokens))}
        for name, tiles in [("default", None), *((str(t), t) for t in ALTERNATIVES)]:
            try:
                err = max(max_relative_error(weight_only_gemm(x, p, tiles=tiles).float(), r)
                          for (_, _, p), x, r in zip(layers, xs, refs))
                us = sum(time_call(lambda p=p, x=x: weight_only_gemm(x, p, tiles=tiles), repeat=20)
                         for (_, _, p), x in zip(layers, xs))
                row[name if tiles else "us"] = [round(us, 1), round(err, 4)]
            except Exception as e:  # noqa: BLE001
                row[name] = str(e)[:80]
        print(json.dumps(row), flush=True)
    del layers
    torch.cuda.empty_cache()
