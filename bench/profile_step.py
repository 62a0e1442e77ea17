"""Where a step's time goes: the first steps of the qa-358 workload one by one (prefill and mixed
batches), then GPU kernel times from torch.profiler over steady decode steps, for a large batch and for
a single sequence: per kernel, its µs and launches per step, and the step's totals.

Usage: PYTHONPATH=. python bench/profile_step.py [--model M] [--workload single|nano-256]
[--no-small-batch-kernels] (`--workload nano-256` runs that whole workload a step at a time and splits
its time and its bytes floor by kind of step: prompt-carrying steps, and decode steps by batch size, so
a ratio to the floor below the target shows which steps hold it down; `--workload single` profiles
only the single stream and lists every kernel; run it with and without
`--no-small-batch-kernels` to see what the fused small-batch path changes). With
`--tensor-parallel-size 2` the kernels are rank 0's: its GEMVs against its all-reduces, whose time
includes waiting for the other rank. `--quantization` and `--kv-cache-dtype` profile a format;
`--lora-rank R` runs every request under one random rank-R adapter on all seven projections, with
`--max-loras` resident slots (1 by default); `--top N` lists the N costliest kernels (10 by default) of
the large batch's decode steps, and of its second to fourth steps, which carry prompt tokens only (qa-358
fills them to the default 8,192-token budget): the first-steps listing times steps 1 and 5-13 around them."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from tokenmill import LLM, SamplingParams
from tokenmill.bench.bytes_floor import measure_copy_bandwidth
from tokenmill.bench.workloads import WORKLOADS, make_requests
from tokenmill.engine.kv_cache_sizing import kv_bytes_per_block
from tokenmill.lora.adapter import LoRARequest
from tokenmill.lora.random_adapters import write_random_adapters

DECODE_BUCKETS = (128, 32, 8, 1)  # decode steps grouped by batch size: at least 128, 32, 8, 1 sequences


def timed_step(engine) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    engine.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000


def kernel_table(engine, steps: int, top: int | None) -> None:
    """The `top` kernels by GPU time per step (None: all of them), with launches per step."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total and not e.key.startswith("aten::")]
    events.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events) / steps / 1000
    launches = sum(e.count for e in events) / steps
    print(f"  GPU kernel time per step {total:.3f} ms in {launches:.0f} launches; kernels by time")
    print("    (us per step, launches per step, us per launch):")
    for e in events[:top]:
        per_step, per_launch = e.device_time_total / steps, e.device_time_total / e.count
        print(f"    {per_step:9.1f}  {e.count / steps:6.1f}  {per_launch:7.2f}  {e.key[:70]}")


def large_batch(engine, requests, lora: LoRARequest | None, top: int) -> None:
    for index, (prompt, out) in enumerate(requests):
        params = SamplingParams(temperature=0, max_tokens=out, ignore_eos=True)
        engine.add_request(str(index), prompt, params, False, lora)
    print("first steps of qa-358 (ms, scheduled sequences, tokens):")
    for index in range(10):
        if index == 1:  # the second to fourth steps: prompt tokens only
            print("  kernels of the second to fourth steps (prompt tokens only):")
            kernel_table(engine, 3, top=top)
        batch_size = len(engine.scheduler.running) + len(engine.scheduler.waiting)
        print(f"  {timed_step(engine):8.2f}  {batch_size}")
    steady = [timed_step(engine) for _ in range(20)]
    print(f"steady decode of 358 sequences: {sum(steady) / len(steady):.2f} ms per step (host clock)")
    kernel_table(engine, 5, top=top)
    while engine.has_unfinished_requests():
        engine.step()


def single_stream(engine, prompt: list[int], lora: LoRARequest | None) -> None:
    params = SamplingParams(temperature=0, max_tokens=300, ignore_eos=True)
    engine.add_request("one", prompt, params, False, lora)
    for _ in range(5):
        engine.step()
    single = [timed_step(engine) for _ in range(50)]
    print(f"decode of 1 sequence: {sum(single) / len(single):.3f} ms per step (host clock)")
    kernel_table(engine, 20, top=None)


def step_kind(engine) -> str:
    """The bucket of the step about to run: prompt tokens in it, or decode at its batch size."""
    scheduler = engine.scheduler
    if scheduler.waiting or any(seq.num_uncomputed_tokens > 1 for seq in scheduler.running):
        return "steps with prompt tokens"
    size = len(scheduler.running)
    low = next(bound for bound in DECODE_BUCKETS if size >= bound)
    return f"decode, >= {low} sequences"


def steps_by_kind(engine, requests, weights: int, kv_per_token: int, bandwidth: float, run: str) -> dict:
    """{kind of step: [steps, ms, floor ms, decode tokens]} over one run of the whole batch."""
    for index, (prompt, out) in enumerate(requests):
        params = SamplingParams(temperature=0, max_tokens=out, ignore_eos=True)
        engine.add_request(f"{run}-{index}", prompt, params, False)
    totals: dict[str, list[float]] = {}
    while engine.has_unfinished_requests():
        kind = step_kind(engine)
        running = engine.scheduler.running
        floor_ms = 1000 * (weights + kv_per_token * sum(seq.num_tokens for seq in running)) / bandwidth
        entry = totals.setdefault(kind, [0, 0.0, 0.0, 0])
        entry[3] += sum(seq.num_uncomputed_tokens == 1 for seq in running)
        entry[0] += 1
        entry[1] += timed_step(engine)
        entry[2] += floor_ms
    return totals


def by_kind_of_step(engine, requests) -> None:
    """Runs the whole batch a step at a time (synchronised, so async overlap is lost) and prints, per
    kind of step, its steps, time and bytes floor (weights once, each running sequence's context once)."""
    weights = sum(p.numel() * p.element_size() for p in engine.runner.model.parameters())
    kv_per_token = kv_bytes_per_block(engine.runner.model, 1, engine.runner.kv_caches[0].dtype)
    bandwidth = measure_copy_bandwidth(engine.runner.device)
    for run in ("warm-up", "measured"):  # the first run compiles what the batch's shapes need
        totals = steps_by_kind(engine, requests, weights, kv_per_token, bandwidth, run)
    wall = sum(entry[1] for entry in totals.values())
    print(f"whole batch a step at a time: {wall / 1000:.2f} s; copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    print("  kind of step: steps, ms, share of time, floor ms, ratio to floor, decode tokens")
    for kind, (steps, ms, floor_ms, tokens) in sorted(totals.items()):
        share, ratio = ms / wall, floor_ms / ms
        print(f"  {kind:26s} {steps:5.0f} {ms:9.1f} {share:6.1%} {floor_ms:9.1f} {ratio:6.3f} {tokens:7d}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:qwen3-0.6b")
    parser.add_argument("--workload", choices=["all", "single", "nano-256"], default="all")
    parser.add_argument("--small-batch-kernels", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="kernels are rank 0's")
    parser.add_argument("--quantization")
    parser.add_argument("--kv-cache-dtype", default="auto")
    parser.add_argument("--lora-rank", type=int, default=0, help="0: no adapter")
    parser.add_argument("--max-loras", type=int, default=1, help="resident adapter slots with --lora-rank")
    parser.add_argument("--top", type=int, default=10, help="kernels listed for the large batch")
    args = parser.parse_args()
    max_num_seqs = {"all": 358, "single": 8, "nano-256": 256}[args.workload]
    lora = dict(enable_lora=True, max_lora_rank=args.lora_rank, max_loras=args.max_loras)
    llm = LLM(
        args.model,
        max_num_seqs=max_num_seqs,
        small_batch_kernels=args.small_batch_kernels,
        tensor_parallel_size=args.tensor_parallel_size,
        async_scheduling=args.workload != "nano-256",  # there: each step's kind read before it runs
        quantization=args.quantization,
        kv_cache_dtype=args.kv_cache_dtype,
        **(lora if args.lora_rank else {}),
    )
    engine = llm.engine
    print(f"small-batch kernels: {'on' if args.small_batch_kernels else 'off'}")
    lora = None
    if args.lora_rank:
        directory = Path(tempfile.mkdtemp())
        [lora] = write_random_adapters(engine.model_config, directory, 1, args.lora_rank)
    if args.workload == "nano-256":
        by_kind_of_step(engine, make_requests(WORKLOADS["nano-256"], engine.model_config.vocab_size))
        llm.shutdown()
        return
    requests = make_requests(WORKLOADS["qa-358"], engine.model_config.vocab_size)
    if args.workload == "all":
        large_batch(engine, requests, lora, args.top)
    single_stream(engine, requests[0][0], lora)
    llm.shutdown()  # under tensor parallelism: graphs released before the process group


if __name__ == "__main__":
    main()
