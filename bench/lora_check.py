"""LoRA on a GPU in one call: the CUDA-graph path against eager and against the PyTorch reference, then
the issue-16 throughput targets.

1. Mixed batches (the base model and 4 random rank-16 adapters, interleaved) on `random:qwen3-0.6b` in
   bf16: greedy agreement (tokens before the first divergence) of CUDA graphs vs eager vs `kernels=torch`,
   and how many answers the adapters change (if none, the check proves nothing). Two batches: 20 prompts
   (the batched shrink/expand kernels) and 6 (decode steps on the fused small-batch path, padded to 8).
2. `bench` workloads qa-358 and single: base, every request on one rank-16 adapter, the batch spread over
   8 adapters; ratios to base against the targets (0.85, 0.80; single 0.85), summed up at the end.
Usage: PYTHONPATH=. python bench/lora_check.py [--skip-mixed | --skip-throughput] [--workloads single]
[--num-loras 0 1] [--repeat 1] [--out results.json]; exits 1 if the graph path disagrees with eager.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from tokenmill import LLM, SamplingParams
from tokenmill.bench.offline import benchmark
from tokenmill.bench.workloads import WORKLOADS
from tokenmill.config import EngineConfig
from tokenmill.lora.random_adapters import write_random_adapters

SETUPS = {"graphs": {}, "eager": {"enforce_eager": True}, "torch-kernels": {"kernels": "torch"}}
TARGETS = {("qa-358", 1): 0.85, ("qa-358", 8): 0.80, ("single", 1): 0.85}


def agreement(reference: list[list[int]], outputs: list[list[int]]) -> float:
    same = total = 0
    for ref, out in zip(reference, outputs):
        total += len(ref)
        for a, b in zip(ref, out):
            if a != b:
                break
            same += 1
    return same / max(total, 1)


def mixed_batch_check(model: str, max_tokens: int = 32) -> dict:
    """Per batch size (20: the batched LoRA kernels; 6: the fused small-batch path), the agreements."""
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 250) for _ in range(rng.randrange(8, 200))] for _ in range(20)]
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    tokens: dict[tuple[str, int], list[list[int]]] = {}
    base: dict[int, list[list[int]]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, setup in SETUPS.items():
            llm = LLM(model, enable_lora=True, max_loras=4, max_lora_rank=16, max_model_len=1024, **setup)
            adapters = write_random_adapters(llm.engine.model_config, Path(directory), 4, 16, b_std=0.1)
            for size in (20, 6):
                batch = prompts[:size]
                loras = [None if i % 5 == 4 else adapters[i % 5] for i in range(size)]
                outputs = llm.generate(batch, params, lora_request=loras)
                tokens[(name, size)] = [o.outputs[0].token_ids for o in outputs]
                if name == "graphs":
                    base[size] = [o.outputs[0].token_ids for o in llm.generate(batch, params)]
            del llm
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    report = {}
    for size in (20, 6):
        graphs = tokens[("graphs", size)]
        changed = sum(a != b for a, b in zip(base[size], graphs))
        report[f"{size}_prompts"] = {
            "graphs_vs_eager": agreement(tokens[("eager", size)], graphs),
            "graphs_vs_torch_kernels": agreement(tokens[("torch-kernels", size)], graphs),
            "answers_changed_by_adapters": f"{changed}/{size}",
        }
    return report


def throughput(model: str, workloads: list[str], loras: list[int], repeat: int) -> dict:
    report = {}
    for workload in workloads:
        rates = {}
        for num_loras in loras if workload == "qa-358" else [n for n in loras if n <= 1]:
            given = {"model": model, "max_num_seqs": max(WORKLOADS[workload].num_prompts, 1)}
            if num_loras:
                given.update(enable_lora=True, max_loras=num_loras, max_lora_rank=16)
            command = f"bench/lora_check.py {workload} num_loras={num_loras}"
            result = benchmark(
                EngineConfig(**given), WORKLOADS[workload], [], command, None, repeat, False, num_loras
            )
            rates[num_loras] = asdict(result)
            ratio = result.output_tokens_per_s / rates[0]["output_tokens_per_s"] if 0 in rates else None
            target = TARGETS.get((workload, num_loras))
            goal = "" if target is None else f"(target {target})"
            shown = "" if ratio is None else f", ratio {ratio:.3f}"
            rate = result.output_tokens_per_s
            print(workload, num_loras, "adapters:", rate, f"tok/s{shown}", goal, flush=True)
        report[workload] = rates
    return report


def summary(report: dict) -> list[str]:
    """One line per issue-16 target that was measured: the ratio to base and whether it is met."""
    lines = []
    for (workload, num_loras), target in TARGETS.items():
        rates = report.get(workload, {})
        if 0 in rates and num_loras in rates:
            ratio = rates[num_loras]["output_tokens_per_s"] / rates[0]["output_tokens_per_s"]
            verdict = "met" if ratio >= target else "MISSED"
            line = f"{workload}, {num_loras} adapter(s) / base: {ratio:.3f} (target {target})"
            lines.append(f"{line} {verdict}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:qwen3-0.6b")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-mixed", action="store_true", help="no graphs-vs-eager check (3 engines)")
    parser.add_argument("--workloads", nargs="+", choices=["qa-358", "single"], default=["qa-358", "single"])
    parser.add_argument("--num-loras", nargs="+", type=int, default=[0, 1, 8], help="0: the base model")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (their median)")
    parser.add_argument("--out")
    args = parser.parse_args()
    report: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    if not args.skip_mixed:
        report["mixed_batch"] = mixed_batch_check(args.model)
        print("mixed batch", json.dumps(report["mixed_batch"]), flush=True)
    if not args.skip_throughput:
        report["throughput"] = throughput(args.model, args.workloads, args.num_loras, args.repeat)
        report["targets"] = summary(report["throughput"])
        print("\n".join(report["targets"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    agreements = [batch["graphs_vs_eager"] for batch in report.get("mixed_batch", {}).values()]
    return 0 if all(a >= 0.9 for a in agreements) else 1


if __name__ == "__main__":
    sys.exit(main())
