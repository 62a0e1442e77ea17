"""Launch shapes of the weight-only GEMM (tiles, warps, split-K) swept on a GPU, in one call.

For each weight-only format (int8, fp8 per channel decoded in registers, AWQ, GPTQ 4/8-bit) on the
Qwen3-8B projections, times `weight_only_gemm` with every candidate shape at decode sizes (1 and 16
tokens) and at a prefill size (256), summed over the four projections, and prints one line per format
and token count: the fastest shape, its microseconds, those of the shape `tiles_for` picks today, and
bf16 cuBLAS's. A candidate that does not compile or launch on this GPU is skipped and named. The
one-token decode GEMV's shapes are swept by `bench/quant_gemv_hbm.py --sweep`, which reads the weights
from HBM as a decode step does.
Usage: PYTHONPATH=. python bench/quant_tune.py [--formats awq,gptq4] [--out results.json]
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
from quant_gemm import FORMATS, build, projections, time_call

from tokenmill.kernels.triton.weight_only_gemm import Tiles, tiles_for, weight_only_gemm
from tokenmill.quantization.triton_gemms import packed_weight

DECODE = [Tiles(16, n, k, warps) for n, k, warps in itertools.product((32, 64, 128), (64, 128, 256), (4, 8))]
PREFILL = [
    Tiles(128, 128, 32, 4), Tiles(128, 128, 64, 4), Tiles(128, 128, 64, 8), Tiles(64, 128, 64, 4),
    Tiles(128, 64, 64, 4), Tiles(128, 256, 32, 8), Tiles(256, 128, 32, 8),
]  # fmt: skip
CANDIDATES = {1: DECODE, 16: DECODE, 256: PREFILL}
SPLITS = {1: (None, 1, 2, 4, 8), 16: (None, 1, 2, 4, 8), 256: (None,)}  # None: split_k.plan's choice
WEIGHT_ONLY = ("int8", "fp8-channel", "awq", "gptq4", "gptq8")


def sweep(fmt: str, device: torch.device) -> list[dict]:
    layers = [build(FORMATS[fmt](), inp, shards, device) for inp, shards in projections("qwen3-8b").values()]
    dense = [
        build(FORMATS["bf16"](), inp, shards, device) for inp, shards in projections("qwen3-8b").values()
    ]
    packed = [packed_weight(layer) for layer in layers]
    lines = []
    for tokens, candidates in CANDIDATES.items():
        inputs = [torch.randn(tokens, p.in_features, dtype=torch.bfloat16, device=device) for p in packed]
        bf16 = sum(time_call(lambda layer=layer, x=x: layer(x), repeat=10) for layer, x in zip(dense, inputs))
        default = tiles_for(tokens)
        timed: dict[tuple[Tiles, int | None], float] = {}
        for tiles, split in itertools.product(candidates, SPLITS[tokens]):
            try:
                timed[tiles, split] = sum(
                    time_call(lambda p=p, x=x, s=split, t=tiles: weight_only_gemm(x, p, s, t), repeat=10)
                    for p, x in zip(packed, inputs)
                )
            except Exception as error:  # a shape this GPU cannot run (registers, shared memory)
                print(f"# {fmt} M={tokens} {tiles} split={split}: {type(error).__name__}", flush=True)
        (best_tiles, best_split), best = min(timed.items(), key=lambda item: item[1])
        line = {
            "format": fmt, "tokens": tokens, "best": repr(best_tiles), "best_split_k": best_split,
            "best_us": round(best, 1), "default": repr(default), "default_us": round(timed[default, None], 1),
            "bf16_us": round(bf16, 1), "best_speedup_vs_bf16": round(bf16 / best, 3),
            "default_speedup_vs_bf16": round(bf16 / timed[default, None], 3),
        }  # fmt: skip
        print(json.dumps(line), flush=True)
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--formats", default=",".join(WEIGHT_ONLY))
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda")
    lines = [line for fmt in args.formats.split(",") for line in sweep(fmt, device)]
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"device": torch.cuda.get_device_name(device), "lines": lines}, file, indent=2)


if __name__ == "__main__":
    main()
