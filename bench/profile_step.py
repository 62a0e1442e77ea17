"""Where one decode step's time goes on the GPU: kernel times from torch.profiler over a few steps of
the qa-358 workload, next to the step's wall time. Usage: PYTHONPATH=. python bench/profile_step.py"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from tokenmill import LLM, SamplingParams
from tokenmill.bench.offline import WORKLOADS, make_requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:qwen3-0.6b")
    parser.add_argument("--kv-cache-dtype", default="auto")
    args = parser.parse_args()
    llm = LLM(args.model, max_num_seqs=358, kv_cache_dtype=args.kv_cache_dtype)
    engine = llm.engine
    requests = make_requests(WORKLOADS["qa-358"], engine.model_config.vocab_size)
    for index, (prompt, out) in enumerate(requests):
        engine.add_request(
            str(index), prompt, SamplingParams(temperature=0, max_tokens=out, ignore_eos=True), False
        )
    while engine.stats.decode_steps < 20:  # past prefill, into steady decoding
        engine.step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(20):
        engine.step()
    torch.cuda.synchronize()
    print(f"wall per decode step: {(time.perf_counter() - started) / 20 * 1000:.2f} ms (358 sequences)")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            engine.step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))
    gpu = sum(e.device_time_total for e in prof.key_averages() if e.device_time_total) / 5 / 1000
    print(f"GPU kernel time per step: {gpu:.2f} ms")


if __name__ == "__main__":
    main()
