"""A decoder layer's projections with LoRA at Qwen3-0.6B's shapes, on a GPU, in one short call.

For the four projection groups of a layer (q|k|v, o, gate|up, down), at 1, 16 and 358 tokens spread over
`--adapters` rank-16 adapters (of `--slots` resident slots), each captured in one CUDA graph of `--iters`
layers (as decode steps run), the microseconds per layer of: the base GEMMs alone; the base GEMM plus
the batched shrink and expand (`kernels/triton/lora.py`: 3 launches a projection, what quantized and
tensor-parallel projections run); and the shrink folded into the base GEMM (A's slots stacked under the
weight, as `LoRALinear` does for plain projections: 2 launches a projection; the engine then adds
gate|up's expand in its SiLU-and-mul instead, which this does not time). Multiply by 28 layers for a
step's cost next to `bench single`.
Usage: PYTHONPATH=. python bench/lora_kernels.py [--slots 8] [--adapters 1 8] [--rank 16] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tokenmill.kernels.lora_mapping import LoRAMapping, tiles
from tokenmill.kernels.triton import lora

# (input width, fused output shards) of Qwen3-0.6B's projection groups
GROUPS = {"qkv": (1024, (2048, 1024, 1024)), "o": (2048, (1024,)), "gate_up": (1024, (3072, 3072)),
          "down": (3072, (1024,))}  # fmt: skip
TOKENS = (1, 16, 358)


def mapping(num_tokens: int, slots: int, adapters: int, device: torch.device) -> LoRAMapping:
    token_slots = (np.arange(num_tokens) % adapters).astype(np.int32)  # round robin over the adapters
    return LoRAMapping(*(torch.from_numpy(a).to(device) for a in (token_slots, *tiles(token_slots, slots))))


def graph_us(layer: Callable[[], None], iters: int) -> float:
    """Replay time of a graph of `iters` calls of `layer`, per call, in microseconds."""
    layer()  # compile
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            layer()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / iters


def time_layer(num_tokens: int, slots: int, adapters: int, rank: int, iters: int) -> dict:
    dtype = torch.bfloat16
    step = mapping(num_tokens, slots, adapters, torch.device("cuda"))
    groups = []
    for width, shards in GROUPS.values():
        x = torch.randn(num_tokens, width, dtype=dtype)
        n = sum(shards)
        stacked = torch.randn(n + slots * len(shards) * rank, width, dtype=dtype) / width**0.5
        a = stacked[n:].view(slots, len(shards), rank, width)
        b = torch.randn(slots, n, rank, dtype=dtype) * 0.01
        ranks = torch.full((slots, len(shards)), rank, dtype=torch.int32)
        groups.append((x, stacked[:n], stacked, a, b, ranks, shards))

    def base() -> None:
        for x, weight, *_ in groups:
            F.linear(x, weight)

    def separate_shrink() -> None:
        for x, weight, _, a, b, ranks, shards in groups:
            lora.lora_expand(F.linear(x, weight), lora.lora_shrink(x, a, ranks, step), b, ranks, shards, step)

    def shrink_in_gemm() -> None:
        for x, weight, stacked, a, b, ranks, shards in groups:
            out = F.linear(x, stacked)
            y, h = out[:, : weight.shape[0]], out[:, weight.shape[0] :].unflatten(1, a.shape[:3])[None]
            lora.lora_expand(y, h, b, ranks, shards, step)

    runs = {"base": base, "separate_shrink": separate_shrink, "shrink_in_gemm": shrink_in_gemm}
    report: dict = {name: graph_us(run, iters) for name, run in runs.items()}
    report["splits"] = {name: lora.shrink_splits(num_tokens, len(s), w) for name, (w, s) in GROUPS.items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", type=int, default=8, help="resident adapter slots (grid rows)")
    parser.add_argument("--adapters", type=int, nargs="+", default=[1, 8], help="adapters the tokens use")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--iters", type=int, default=28, help="layers per timed graph replay")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_default_device("cuda")
    report: dict = {"device": torch.cuda.get_device_name(), "slots": args.slots, "rank": args.rank}
    for adapters in args.adapters:
        for num_tokens in TOKENS:
            result = time_layer(num_tokens, args.slots, adapters, args.rank, args.iters)
            report[f"{adapters}_adapters_{num_tokens}_tokens"] = result
            figures = ", ".join(
                f"{name} {result[name]:.1f}" for name in ("base", "separate_shrink", "shrink_in_gemm")
            )
            print(f"{adapters} adapter(s), {num_tokens:4d} tokens, us/layer: {figures}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
