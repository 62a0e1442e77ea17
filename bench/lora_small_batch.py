"""GPU time of a decode step's LoRA work per layer under a CUDA graph, Qwen3-0.6B shapes, rank 16, bf16:
the fused path's one delta launch per projection (q|k|v, o, gate|up, down) against the batched kernels'
shrink + expand pair per projection. Each figure is the replay time of a graph of `--layers` layers of
those launches, divided by the layers, so launch gaps count as they do in the decode graphs.
Usage: PYTHONPATH=. python bench/lora_small_batch.py [--rows 1] [--layers 28]"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from tokenmill.kernels.lora_mapping import LoRAMapping, tiles
from tokenmill.kernels.triton import lora, lora_small_batch

# name: (in, out shards, input prologue)
PROJECTIONS = {
    "qkv": (1024, (2048, 1024, 1024), "norm"),
    "o": (2048, (1024,), "none"),
    "gate_up": (1024, (3072, 3072), "norm"),
    "down": (3072, (1024,), "silu_mul"),
}


def graph_time_us(step: Callable[[], None], layers: int) -> float:
    """Median replay time of a graph of `layers` calls of `step`, per call, in microseconds."""
    step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(layers):
            step()
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / layers)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    torch.set_default_device("cuda")
    dtype, slots = torch.bfloat16, 1
    token_slots = np.zeros(args.rows, dtype=np.int32)
    mapping = LoRAMapping(*(torch.from_numpy(a).cuda() for a in (token_slots, *tiles(token_slots, slots))))
    fused, batched = [], []
    for k, shards, prologue in PROJECTIONS.values():
        n = sum(shards)
        x = torch.randn(args.rows, 2 * k if prologue == "silu_mul" else k, dtype=dtype)
        y = torch.randn(args.rows, n, dtype=dtype)
        a = torch.randn(slots, len(shards), args.rank, k, dtype=dtype) / k**0.5
        b = torch.randn(slots, n, args.rank, dtype=dtype) * 0.01
        norm = (torch.ones(k, dtype=dtype), 1e-6) if prologue == "norm" else None
        fused.append(
            lambda y=y, x=x, a=a, b=b, s=shards, norm=norm, p=prologue: lora_small_batch.lora_delta(
                y, x, a, b, s, mapping.token_slots, norm, p == "silu_mul"
            )
        )
        x_in = x[:, :k].contiguous()  # the batched path reads the normalised / activated rows
        batched.append(
            lambda y=y, x=x_in, a=a, b=b, s=shards: lora.lora_expand(
                y, lora.lora_shrink(x, a, mapping), b, s, mapping
            )
        )
    for name, steps in (("fused delta (4 launches)", fused), ("shrink + expand (8 launches)", batched)):
        per_layer = graph_time_us(lambda steps=steps: [step() for step in steps], args.layers)
        print(f"{name}: {per_layer:.1f} us per layer, {per_layer * args.layers:.0f} us per step", flush=True)


if __name__ == "__main__":
    main()
