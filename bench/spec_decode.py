"""Speculative decoding on a GPU: each workload without speculation, then with n-gram speculation at each
`--k` (and with `--draft MODEL`, draft-model speculation at each `--k`), in one process; reports tokens/s, the
speed-up over no speculation, whether the greedy output is identical (same token digest), and the acceptance
of every run. With `--replay-acceptance A`, also runs with the bench-only ReplayProposer (the target's own
greedy tokens, each kept with probability A; k fixed, the adaptive policy off): the speed-up as a function
of acceptance, which random-weight models cannot show with real proposals. The replayed tokens are recorded
from a speculative pass (every step verifies k proposals), not from the run without speculation: under
bf16 the two may round differently, and the replay must propose what its own verify steps compute. Each
replay point reports the requested and measured acceptance and whether its text equals the recording
(`replay`, with `replay_source: "speculative pass"`).

Targets (issue 13): `copy` (one stream repeating its prompt) >= 2x with identical text; `qa-358` with
adaptive speculation >= 0.98x of the throughput without.

Usage: python bench/spec_decode.py --model /models/Qwen3-0.6B --out spec-decode.json
       [--workload copy --workload qa-358] [--k 2 --k 4 --k 8] [--repeat 3] [--no-adaptive]
       [--replay-acceptance 0.3 --replay-acceptance 0.6 --replay-acceptance 0.9] [--draft random:qwen3-0.6b]

A `random:` draft of the target's own preset has the target's weights (same seed): acceptance 1.0, so it
shows the draft's own cost; a smaller random draft accepts nothing, and the adaptive policy should turn it
off rather than slow decoding."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tokenmill.bench.offline import benchmark
from tokenmill.bench.replay_proposer import Replay
from tokenmill.bench.workloads import WORKLOADS
from tokenmill.config import EngineConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", required=True, help="a real model: random weights do not copy")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="default: copy")
    parser.add_argument("--k", action="append", type=int, help="num_speculative_tokens (default: 4)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-adaptive", action="store_true", help="speculate every step")
    parser.add_argument(
        "--replay-acceptance", action="append", type=float, default=[], help="bench-only replay runs"
    )
    parser.add_argument("--draft", help="also run draft-model speculation with this draft model")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = []
    for name in args.workload or ["copy"]:
        workload = WORKLOADS[name]
        base = dict(model=args.model, max_num_seqs=max(workload.num_prompts, 1))
        runs: list[tuple[str, EngineConfig, Replay | None]] = [("none", EngineConfig(**base), None)]
        for k in args.k or [4]:
            spec = EngineConfig(
                **base,
                speculative_method="ngram",
                num_speculative_tokens=k,
                speculative_adaptive=not args.no_adaptive,
            )
            runs.append((f"ngram-k{k}", spec, None))
            if args.draft:
                update = {"speculative_method": "draft", "speculative_model": args.draft}
                draft = spec.model_copy(update=update)
                runs.append((f"draft-k{k} ({args.draft})", draft, None))
            for acceptance in args.replay_acceptance:
                replayed = spec.model_copy(update={"speculative_adaptive": False})
                replay_label = f"replay-a{acceptance}-k{k} (bench-only proposer)"
                runs.append((replay_label, replayed, Replay(acceptance)))
        baseline = None
        for label, config, prepare in runs:
            result = benchmark(
                config, workload, [], "bench/spec_decode.py", None, args.repeat, prepare=prepare
            )
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
            if prepare is not None:
                entry["replay"] = {
                    "replay_source": "speculative pass",
                    "requested_acceptance": prepare.acceptance,  # each proposed token kept with it
                    "measured_acceptance": result.speculation.get("acceptance_rate"),  # accepted / proposed
                    "expected_acceptance": round(prepare.expected_rate(config.num_speculative_tokens), 3),
                    "identical_to_recording": result.output_digest == prepare.recording,
                }
            print(json.dumps({k: v for k, v in entry.items() if k != "result"}), flush=True)
            report.append(entry)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
