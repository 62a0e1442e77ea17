"""The LoRA kernels of one decoder layer at Qwen3-0.6B's shapes, on a GPU, in one short call.

For the four adapted projection groups of a layer (q|k|v, o, gate|up, down) it runs the shrink and the
expand (`kernels/triton/lora.py`) for every token under one rank-16 adapter, at 1, 16 and 358 tokens,
captured in one CUDA graph per token count (as decode steps run), and reports the microseconds per layer
and per launch, and how many split-K parts the shrink used. Multiply by 28 layers for a step's cost next
to `bench single` (base ≈ 1,400 µs per step on an H100).
Usage: PYTHONPATH=. python bench/lora_kernels.py [--slots 8] [--rank 16] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tokenmill.kernels.lora_mapping import LoRAMapping, tiles
from tokenmill.kernels.triton import lora

# (input width, fused output shards) of Qwen3-0.6B's projection groups
GROUPS = {"qkv": (1024, (2048, 1024, 1024)), "o": (2048, (1024,)), "gate_up": (1024, (3072, 3072)),
          "down": (3072, (1024,))}  # fmt: skip
TOKENS = (1, 16, 358)


def mapping(num_tokens: int, slots: int, device: torch.device) -> LoRAMapping:
    token_slots = np.zeros(num_tokens, dtype=np.int32)  # every token on slot 0
    return LoRAMapping(*(torch.from_numpy(a).to(device) for a in (token_slots, *tiles(token_slots, slots))))


def time_layer(num_tokens: int, slots: int, rank: int, device: torch.device, iters: int) -> dict:
    dtype = torch.bfloat16
    step = mapping(num_tokens, slots, device)
    tensors = []
    for width, shards in GROUPS.values():
        x = torch.randn(num_tokens, width, device=device, dtype=dtype)
        a = torch.randn(slots, len(shards), rank, width, device=device, dtype=dtype) / width**0.5
        b = torch.randn(slots, sum(shards), rank, device=device, dtype=dtype)
        y = torch.zeros(num_tokens, sum(shards), device=device, dtype=dtype)
        ranks = torch.full((slots, len(shards)), rank, dtype=torch.int32, device=device)
        tensors.append((x, a, b, ranks, y, shards))

    def layer() -> None:
        for x, a, b, ranks, y, shards in tensors:
            lora.lora_expand(y, lora.lora_shrink(x, a, ranks, step), b, ranks, shards, step)

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
    per_layer = start.elapsed_time(end) * 1000 / iters
    splits = {name: lora.shrink_splits(num_tokens, len(s), w) for name, (w, s) in GROUPS.items()}
    return {"us_per_layer": per_layer, "us_per_launch": per_layer / (2 * len(GROUPS)), "splits": splits}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", type=int, default=8, help="resident adapter slots (grid rows)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--iters", type=int, default=28, help="layers per timed graph replay")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda")
    report = {"device": torch.cuda.get_device_name(), "slots": args.slots, "rank": args.rank}
    for num_tokens in TOKENS:
        report[num_tokens] = time_layer(num_tokens, args.slots, args.rank, device, args.iters)
        result = report[num_tokens]
        timing = f"{result['us_per_layer']:7.1f} us/layer, {result['us_per_launch']:5.2f} us/launch"
        print(f"{num_tokens:4d} tokens: {timing}, split-K parts {result['splits']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
