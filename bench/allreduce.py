"""All-reduce time of a tensor-parallel decode step, through the same group code the engine uses.

A decode step of a Llama-family model all-reduces [batch, hidden] activations 2 x layers + 1 times
(after each o_proj and down_proj, and after the vocab-parallel embedding). This times one all-reduce of
that shape eagerly and replayed from a CUDA graph holding a whole step's worth of them (the engine
captures its decode steps), for each batch size, on `--world-size` GPUs (NCCL), or on the CPU (gloo)
as a smoke test. Rank 0 prints one JSON line per batch size and writes them to bench/results/.
Usage: PYTHONPATH=. python bench/allreduce.py --world-size 2 --hidden 4096 --layers 36 --batches 1 256
(Qwen3-8B: hidden 4096, 36 layers; Qwen3-32B: hidden 5120, 64 layers)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

import torch

from tokenmill.distributed.group import TensorParallel, destroy_tensor_parallel, init_tensor_parallel
from tokenmill.distributed.process import run_ranks
from tokenmill.eval.local_server import free_port

RESULTS = Path(__file__).resolve().parent / "results"


def _time_eager(tp: TensorParallel, x: torch.Tensor, iterations: int) -> float:
    """Median seconds of one all-reduce."""
    times = []
    for _ in range(iterations):
        _sync(x.device)
        started = time.perf_counter()
        tp.all_reduce(x)
        _sync(x.device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _time_graph(tp: TensorParallel, x: torch.Tensor, per_step: int, iterations: int) -> float:
    """Median seconds of a CUDA graph replay holding one decode step's `per_step` all-reduces."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            tp.all_reduce(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(per_step):
            tp.all_reduce(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iterations):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rank(rank: int, args: argparse.Namespace, port: int) -> None:
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    tp = init_tensor_parallel(rank, args.world_size, port, device, symmetric=args.symmetric)
    per_step = 2 * args.layers + 1
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lines = []
    for batch in args.batches:
        x = torch.ones(batch, args.hidden, dtype=dtype, device=device)
        for _ in range(5):
            tp.all_reduce(x)
        eager = _time_eager(tp, x, args.iterations)
        graph = _time_graph(tp, x, per_step, args.iterations) if device.type == "cuda" else None
        line = {
            "batch": batch,
            "hidden": args.hidden,
            "layers": args.layers,
            "world_size": args.world_size,
            "symmetric": tp.symmetric is not None,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "bytes": x.numel() * x.element_size(),
            "eager_us": round(eager * 1e6, 1),
            "step_eager_ms": round(eager * per_step * 1e3, 3),
            "step_graph_ms": None if graph is None else round(graph * 1e3, 3),
            "date": dt.date.today().isoformat(),
        }
        lines.append(line)
        if tp.is_first:
            print(json.dumps(line), flush=True)
    if tp.is_first and args.save:
        RESULTS.mkdir(exist_ok=True)
        path = "symmetric" if tp.symmetric is not None else "nccl"
        name = (
            f"allreduce-tp{args.world_size}-h{args.hidden}-{path}-{lines[0]['device'].replace(' ', '-')}.json"
        )
        (RESULTS / name).write_text(json.dumps(lines, indent=2) + "\n")
    destroy_tensor_parallel()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=36)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--iterations", type=int, default=50)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=["cuda", "cpu"], default=default_device)
    parser.add_argument("--save", action="store_true", help="write bench/results/allreduce-*.json")
    parser.add_argument(
        "--no-symmetric", dest="symmetric", action="store_false", help="NCCL for every all-reduce"
    )
    args = parser.parse_args()
    codes = run_ranks(_rank, args.world_size, args, free_port())
    if any(codes):
        raise SystemExit(f"a rank failed: exit codes {codes}")


if __name__ == "__main__":
    main()
