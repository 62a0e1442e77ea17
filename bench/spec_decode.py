"""Speculative decoding on a GPU: each workload without speculation, then with n-gram speculation at each
`--k`, in one process; reports tokens/s, the speed-up over no speculation, whether the greedy output is
identical (same token digest), and the acceptance of every run.

Targets (issue 13): `copy` (one stream repeating its prompt) >= 2x with identical text; `qa-358` with
adaptive speculation >= 0.98x of the throughput without.

Usage: python bench/spec_decode.py --model /models/Qwen3-0.6B --out spec-decode.json
       [--workload copy --workload qa-358] [--k 2 --k 4 --k 8] [--repeat 3] [--no-adaptive]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tokenmill.bench.offline import WORKLOADS, benchmark
from tokenmill.config import EngineConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", required=True, help="a real model: random weights do not copy")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="default: copy")
    parser.add_argument("--k", action="append", type=int, help="num_speculative_tokens (default: 4)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-adaptive", action="store_true", help="speculate every step")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = []
    for name in args.workload or ["copy"]:
        workload = WORKLOADS[name]
        base = dict(model=args.model, max_num_seqs=max(workload.num_prompts, 1))
        runs = [("none", EngineConfig(**base))]
        for k in args.k or [4]:
            spec = EngineConfig(
                **base,
                speculative_method="ngram",
                num_speculative_tokens=k,
                speculative_adaptive=not args.no_adaptive,
            )
            runs.append((f"ngram-k{k}", spec))
        baseline = None
        for label, config in runs:
            result = benchmark(config, workload, [], "bench/spec_decode.py", None, args.repeat)
            baseline = baseline or result
            entry = {
                "workload": name,
                "run": label,
                "output_tokens_per_s": result.output_tokens_per_s,
                "speedup": round(result.output_tokens_per_s / baseline.output_tokens_per_s, 3),
                "identical_output": result.output_digest == baseline.output_digest,
                "speculation": result.speculation,
                "result": asdict(result),
            }
            print(json.dumps({k: v for k, v in entry.items() if k != "result"}), flush=True)
            report.append(entry)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
