"""Where a step's time goes: the first steps of the qa-358 workload one by one (prefill and mixed
batches), then GPU kernel times from torch.profiler over steady decode steps, for a large batch and for
a single sequence. Usage: PYTHONPATH=. python bench/profile_step.py [--model M]"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from tokenmill import LLM, SamplingParams
from tokenmill.bench.offline import WORKLOADS, make_requests


def timed_step(engine) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    engine.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000


def kernel_table(engine, steps: int) -> None:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total and not e.key.startswith("aten::")]
    events.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events) / steps / 1000
    print(f"  GPU kernel time per step {total:.3f} ms; top kernels (us per step, launches per step):")
    for e in events[:10]:
        print(f"    {e.device_time_total / steps:9.1f}  {e.count // steps:4d}  {e.key[:70]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:qwen3-0.6b")
    args = parser.parse_args()
    llm = LLM(args.model, max_num_seqs=358)
    engine = llm.engine
    requests = make_requests(WORKLOADS["qa-358"], engine.model_config.vocab_size)
    for index, (prompt, out) in enumerate(requests):
        engine.add_request(
            str(index), prompt, SamplingParams(temperature=0, max_tokens=out, ignore_eos=True), False
        )
    print("first steps of qa-358 (ms, scheduled sequences, tokens):")
    for _ in range(10):
        batch_size = len(engine.scheduler.running) + len(engine.scheduler.waiting)
        print(f"  {timed_step(engine):8.2f}  {batch_size}")
    steady = [timed_step(engine) for _ in range(20)]
    print(f"steady decode of 358 sequences: {sum(steady) / len(steady):.2f} ms per step (host clock)")
    kernel_table(engine, 5)
    while engine.has_unfinished_requests():
        engine.step()
    engine.add_request(
        "one", requests[0][0], SamplingParams(temperature=0, max_tokens=300, ignore_eos=True), False
    )
    for _ in range(5):
        engine.step()
    single = [timed_step(engine) for _ in range(50)]
    print(f"decode of 1 sequence: {sum(single) / len(single):.3f} ms per step (host clock)")
    kernel_table(engine, 20)


if __name__ == "__main__":
    main()
