"""Single-stream decode of one model in each weight format, in one process: the issue-12 model-level
figures (8B single stream, FP8 and AWQ against bf16) in about two minutes on an H100.

Each format loads `random:<preset>` (the same seeded draws, quantized while loading: `--quantization`),
runs the `single` workload (one 128-token prompt, 256 greedy tokens; `--workload batch-8`: eight at once)
through `tokenmill bench`'s own `benchmark` (an untimed run first, then the timed one) with a small KV cache,
and prints one line per format: output tokens/s, speed-up over bf16, weight bytes, the bytes floor and
the share of it reached, startup seconds, and the Triton compiles in the timed run (0: the warm-up
covered every kernel variant). `--out-dir` keeps each run's JSON as `tokenmill bench` writes it.
Usage: PYTHONPATH=. python bench/quant_models.py [--model random:qwen3-8b] [--formats none,int8,fp8,awq,gptq]
       [--workload single|batch-8]
       [--cold-start] [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenmill.bench.offline import benchmark
from tokenmill.bench.workloads import WORKLOADS
from tokenmill.config import EngineConfig

KV_BLOCKS = 64  # 1024 tokens of cache per sequence: a request needs 384


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:qwen3-8b")
    parser.add_argument("--formats", default="none,int8,fp8,awq,gptq", help="none: bf16")
    parser.add_argument("--workload", default="single", choices=["single", "batch-8"])
    parser.add_argument(
        "--cold-start", action="store_true", help="no untimed run: the first request is timed"
    )
    parser.add_argument("--out-dir", type=Path)
    args = parser.parse_args()
    baseline, workload = None, WORKLOADS[args.workload]
    streams = workload.num_prompts
    for fmt in args.formats.split(","):
        quantization = None if fmt == "none" else fmt
        config = EngineConfig(
            model=args.model,
            quantization=quantization,
            max_num_seqs=streams,
            max_model_len=512,
            num_kv_blocks=KV_BLOCKS * streams,
        )
        result = benchmark(
            config, workload, [], "python " + " ".join(sys.argv), args.out_dir,
            cold_start=args.cold_start,
        )  # fmt: skip
        speed = result.output_tokens_per_s
        baseline = baseline or (speed if fmt == "none" else None)
        speedup = f"{speed / baseline:.2f}x bf16" if baseline else "(no bf16 run first)"
        compiles = sum(len(run) for run in result.compiles_in_timed_runs)
        gigabytes = (result.weight_bytes or 0) / 1e9
        print(
            f"{args.workload} {args.model} {fmt:5} {speed:8.1f} tok/s {speedup}  weights {gigabytes:.2f} GB"
            f"  floor {result.floor_tokens_per_s} tok/s ({result.ratio_to_floor} of it)"
            f"  startup {result.startup_s} s  compiles in timed run {compiles}",
            flush=True,
        )


if __name__ == "__main__":
    main()
