"""GPU time of a decode step's four fused projection GEMVs per layer (q|k|v, o, gate|up, down) under a
CUDA graph, Qwen3-0.6B shapes, bf16: without LoRA, and with each row's LoRA delta folded in (rank 16 by
default) under one adapter, under `--adapters` adapters spread over the rows, and with an adapter that
targets q and v only. Each figure is the replay time of a graph of `--layers` layers of those launches,
divided by the layers, so launch gaps count as they do in the decode graphs; the fold adds no launch, so
the difference is the delta's own cost. The last column: the LoRA share of the per-layer time.
Usage: PYTHONPATH=. python bench/lora_small_batch.py [--rows 1 2 8] [--layers 28] [--rank 16]
[--adapters 4] [--out results.json]"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tokenmill.kernels.lora_mapping import NO_ADAPTER, LoRAWeights, ShrinkScratch
from tokenmill.kernels.triton import skinny_gemm

# name: (in, out shards, input prologue)
PROJECTIONS = {
    "qkv": (1024, (2048, 1024, 1024), "norm"),
    "o": (2048, (1024,), "none"),
    "gate_up": (1024, (3072, 3072), "norm"),
    "down": (3072, (1024,), "silu_mul"),
}
TARGETS = {"qkv": (1, 0, 1), "o": (0,), "gate_up": (0, 0), "down": (0,)}  # which shards q and v touch


def graph_time_us(step: Callable[[int], None], layers: int) -> float:
    """Median replay time of a graph of `step` of layers 0 .. `layers` - 1, per layer, in microseconds."""
    for layer in range(layers):
        step(layer)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for layer in range(layers):
            step(layer)
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / layers)
    return float(np.median(times))


def adapters(
    k: int,
    shards: tuple[int, ...],
    rank: int,
    slots: int,
    targeted: tuple[int, ...],
    token_slots: torch.Tensor,
    scratch: ShrinkScratch,
    sites: list[int],
) -> list[LoRAWeights]:
    """`slots` random rank-`rank` adapters of one projection, on the `targeted` shards (1) only, as the
    projection of each layer (its own site: a forward launches each site once)."""
    dtype = torch.bfloat16
    a = (torch.randn(slots, len(shards), rank, k) / k**0.5).to(dtype)
    b = (torch.randn(slots, sum(shards), rank) * 0.01).to(dtype)
    ranks = torch.tensor([[rank * t for t in targeted]] * slots, dtype=torch.int32)
    return [LoRAWeights(a, b, ranks, shards, token_slots, scratch, site) for site in sites]


def layer_step(
    rows: int, rank: int, slots: int | None, row_slots: list[int], qv_only: bool, layers: int
) -> Callable[[int], None]:
    """The four GEMVs of a layer; `slots` None: no LoRA. Layer 0 starts a forward (the LoRA counts zeroed)."""
    dtype, calls = torch.bfloat16, []
    token_slots = torch.tensor(row_slots, dtype=torch.int32)
    scratch = ShrinkScratch.allocate(rows, token_slots.device)  # one for every projection, as in the model
    for index, (name, (k, shards, prologue)) in enumerate(PROJECTIONS.items()):
        n = sum(shards)
        x = torch.randn(rows, 2 * k if prologue == "silu_mul" else k, dtype=dtype)
        weight = (torch.randn(n, k) / k**0.5).to(dtype)
        residual = torch.randn(rows, n, dtype=dtype)
        targeted = TARGETS[name] if qv_only else (1,) * len(shards)
        sites = [len(PROJECTIONS) * layer + index for layer in range(layers)]
        loras = [None] * layers
        if slots is not None:
            loras = adapters(k, shards, rank, slots, targeted, token_slots, scratch, sites)
        if prologue == "norm":
            norm = torch.ones(k, dtype=dtype)
            calls.append(
                lambda layer, x=x, w=weight, norm=norm, loras=loras: skinny_gemm.rms_norm_linear(
                    x, norm, 1e-6, w, None, loras[layer]
                )
            )
        elif prologue == "silu_mul":
            calls.append(
                lambda layer, x=x, w=weight, r=residual, loras=loras: skinny_gemm.silu_mul_linear(
                    x, w, r, loras[layer]
                )
            )
        else:
            calls.append(
                lambda layer, x=x, w=weight, r=residual, loras=loras: skinny_gemm.linear(
                    x, w, None, r, loras[layer]
                )
            )

    def step(layer: int) -> None:
        if layer == 0:
            scratch.begin_forward()
        for call in calls:
            call(layer)

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--adapters", type=int, default=4, help="slots the mixed-batch figure spreads rows over"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_default_device("cuda")
    report: dict = {"device": torch.cuda.get_device_name(), "rank": args.rank, "per_layer_us": {}}
    for rows in args.rows:
        setups = {
            "base": (None, [NO_ADAPTER] * rows, False),
            "one adapter": (1, [0] * rows, False),
            f"{args.adapters} adapters": (args.adapters, [i % args.adapters for i in range(rows)], False),
            "q,v adapter": (1, [0] * rows, True),
            "lora on, no adapter in batch": (1, [NO_ADAPTER] * rows, False),
        }
        times = {}
        for name, (slots, row_slots, qv_only) in setups.items():
            times[name] = graph_time_us(
                layer_step(rows, args.rank, slots, row_slots, qv_only, args.layers), args.layers
            )
            share = 1 - times["base"] / times[name]
            per_step = times[name] * args.layers
            line = f"rows {rows}, {name}: {times[name]:.1f} us per layer, {per_step:.0f} us per step"
            print(f"{line}, LoRA share {share:.1%}", flush=True)
        report["per_layer_us"][rows] = times
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
