"""Each collective pattern a tensor-parallel engine step uses, on its own, in the engine's order, so a
hang on some GPUs is pinned to one pattern in one short run.

Stages, each on every rank through the engine's own group code (`TensorParallel`):
  eager-all-reduce, all-gather (the logits), broadcast (the sampled tokens), point-to-point gather (what
  the logits used before), graph-capture (all-reduces on buffers allocated inside a CUDA graph capture,
  as a decode graph's are), graph-replay, mixed (replay, then eager all-gather and broadcast: one
  decode step), eager-after-graphs (a prefill between decode steps).
A stage that has not finished after --stage-timeout seconds prints the rank's stacks and ends it with
a non-zero code (faulthandler). Rank 0 prints one line per stage.
On the CPU (gloo, no graph stages) it checks itself.
Usage: PYTHONPATH=. python bench/tp_probe.py [--world-size 2] [--hidden 4096] [--vocab 151936]
"""

from __future__ import annotations

import argparse
import faulthandler
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from tokenmill.distributed.group import TensorParallel, destroy_tensor_parallel, init_tensor_parallel
from tokenmill.distributed.process import run_ranks
from tokenmill.eval.local_server import free_port

LAYERS = 8  # all-reduce pairs per captured "step"


def _stage(tp: TensorParallel, name: str, timeout: float, body: Callable[[], None]) -> None:
    faulthandler.dump_traceback_later(timeout, exit=True)  # prints this rank's stacks, exits 1
    started = time.perf_counter()
    body()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    faulthandler.cancel_dump_traceback_later()
    if tp.is_first:
        print(f"ok {name} ({1000 * (time.perf_counter() - started):.1f} ms)", flush=True)


def _rank(rank: int, args: argparse.Namespace, port: int) -> None:
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    tp = init_tensor_parallel(rank, args.world_size, port, device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    hidden = torch.ones(args.batch, args.hidden, dtype=dtype, device=device)
    logits = torch.ones(args.batch, args.vocab // args.world_size, dtype=dtype, device=device)
    sampled = torch.zeros(args.batch, dtype=torch.long, device=device)
    timeout = args.stage_timeout

    def p2p_gather() -> None:
        parts = [torch.empty_like(logits) for _ in range(tp.size)] if tp.is_first else None
        dist.gather(logits, parts, dst=0)

    def step() -> torch.Tensor:
        x = hidden * 2  # allocated inside the capture, in the graph's pool
        for _ in range(LAYERS):
            x = tp.all_reduce(x + 1)
        return x

    graph = torch.cuda.CUDAGraph() if device.type == "cuda" else None

    def capture() -> None:
        step()  # warmed eagerly first, as the engine does
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            step()

    def replay() -> None:
        for _ in range(3):
            graph.replay()

    def mixed() -> None:
        for _ in range(20):
            graph.replay()
            tp.gather_last_dim(logits)
            tp.broadcast_from_first(sampled)

    stages = [
        ("eager-all-reduce", lambda: tp.all_reduce(hidden)),
        ("all-gather", lambda: tp.gather_last_dim(logits)),
        ("broadcast", lambda: tp.broadcast_from_first(sampled)),
        ("point-to-point-gather", p2p_gather),
        ("graph-capture", capture),
        ("graph-replay", replay),
        ("mixed", mixed),
        ("eager-after-graphs", step),
    ]
    skip = set(args.skip)
    if device.type != "cuda":
        skip |= {"graph-capture", "graph-replay", "mixed"}
    for name, body in stages:
        if name not in skip:
            _stage(tp, name, timeout, body)
    destroy_tensor_parallel()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--stage-timeout", type=float, default=20.0)
    parser.add_argument("--skip", nargs="*", default=[], help="stage names to leave out")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=["cuda", "cpu"], default=default_device)
    args = parser.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < args.world_size:
        raise SystemExit(f"needs {args.world_size} GPUs, sees {torch.cuda.device_count()}")
    codes = run_ranks(_rank, args.world_size, args, free_port(), timeout=args.stage_timeout * 10)
    print(f"exit codes {codes}", file=sys.stderr)
    if any(codes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
