"""Where a tensor-parallel decode step's time goes, rank by rank, from both ranks' event logs.

Runs greedy decoding (`--batch` prompts of `--prompt-tokens`, `--tokens` new tokens each) on an engine
with `--tensor-parallel-size` ranks and TOKENMILL_TP_TIMELINE on (`tokenmill/distributed/timeline.py`),
then prints, over the decode steps (the first `--skip` left out), the median, p10 and p90 in µs of:
  r0_send             rank 0: encoding and writing its message
  r0_send_to_launch   rank 0: its message sent -> its own step queued (graph, LM head, argmax)
  r0_sent_before_wait rank 0: its message for step N sent -> it starts waiting for step N-1's tokens
                      (positive: the worker had the step before rank 0 blocked)
  r0_token_wait       rank 0: blocked in waiting for a step's tokens
  message_latency     rank 0 starts sending -> the worker has the message decoded (encode, pipe,
                      wake-up, decode)
  w_receive_to_launch worker: message decoded -> its step queued (graph, LM head, all-gather)
  w_margin            rank 0's device reaches step N (its previous work done) minus the worker's
                      host having queued N; negative: rank 0's device was ready first and its first
                      all-reduce waited for the worker's host
  r0_margin           the same for rank 0's own host
  device_skew         the worker's device reaches step N minus rank 0's (positive: the worker later)
  r0_device_step      rank 0's device from reaching step N to its tokens sampled (all-reduce waits in)
  w_device_step       the worker's device from reaching step N to its logits all-gathered
  r0_between_steps    rank 0's device from step N's tokens sampled to reaching step N+1 (the
                      tokens' broadcast and copy to the host, the next step's input copies)
  r0_period, w_period each device's step period (reaching N -> reaching N+1); r0_host_period: rank
                      0's messages, one per step
Device figures need CUDA (events mapped onto the host clock, which every process of the host shares).
GPU run (2 × H200): NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 PYTHONPATH=. python
bench/tp_timeline.py --model random:qwen3-8b [--batch 1] [--out DIR]; CPU: --device cpu --model DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tokenmill.distributed.timeline import TIMELINE_ENV, load_timeline, stamp_token_waits

Times = dict[tuple[str, int], float]

FIGURES = {  # name: (later stamp, its step offset, earlier stamp): later[N + offset] - earlier[N]
    "r0_send": ("r0 sent", 0, "r0 sending"),
    "r0_send_to_launch": ("r0 launched", 0, "r0 sent"),
    "r0_sent_before_wait": ("r0 waiting", -1, "r0 sent"),
    "r0_token_wait": ("r0 tokens", 0, "r0 waiting"),
    "message_latency": ("w received", 0, "r0 sending"),
    "w_receive_to_launch": ("w launched", 0, "w received"),
    "w_margin": ("r0 device begin", 0, "w launched"),
    "r0_margin": ("r0 device begin", 0, "r0 launched"),
    "device_skew": ("w device begin", 0, "r0 device begin"),
    "r0_device_step": ("r0 device sampled", 0, "r0 device begin"),
    "w_device_step": ("w device forward", 0, "w device begin"),
    "r0_between_steps": ("r0 device begin", 1, "r0 device sampled"),
    "r0_period": ("r0 device begin", 1, "r0 device begin"),
    "w_period": ("w device begin", 1, "w device begin"),
    "r0_host_period": ("r0 sent", 1, "r0 sent"),
}


def _stamps(directory: Path) -> Times:
    """Every stamp of rank 0 and rank 1 by ("r0 sent", step)-style names."""
    times: Times = {}
    for rank, tag in ((0, "r0"), (1, "w")):
        log = load_timeline(directory, rank)
        for kind, prefix in (("host", tag), ("device", f"{tag} device")):
            for what, step, seconds in log[kind]:
                times[f"{prefix} {what}", step] = seconds
    return times


def figures(times: Times, steps: range) -> dict[str, dict[str, float]]:
    rows = {}
    for name, (later, offset, earlier) in FIGURES.items():
        values = [
            times[later, step + offset] - times[earlier, step]
            for step in steps
            if (later, step + offset) in times and (earlier, step) in times
        ]
        if values:
            us = np.array(values) * 1e6
            rows[name] = {
                "median": float(np.median(us)),
                "p10": float(np.percentile(us, 10)),
                "p90": float(np.percentile(us, 90)),
                "steps": len(values),
            }
    return rows


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", default="random:qwen3-8b")
    parser.add_argument("--tensor-parallel-size", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="prompts decoded together")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per prompt")
    parser.add_argument("--skip", type=int, default=8, help="decode steps left out at the start")
    parser.add_argument("--device", default=None, help="cpu to run on the CPU (gloo)")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--out", help="directory for the ranks' logs and figures.json (default: a temp dir)")
    args = parser.parse_args()
    directory = Path(args.out or tempfile.mkdtemp(prefix="tp-timeline-"))
    os.environ[TIMELINE_ENV] = str(directory)  # before the workers are spawned: they read it too

    from tokenmill import LLM, SamplingParams

    engine_args = {"tensor_parallel_size": args.tensor_parallel_size, "enforce_eager": args.enforce_eager}
    if args.device:
        engine_args["device"] = args.device
    llm = LLM(args.model, **engine_args)
    workers = llm.engine.workers
    assert workers is not None and workers.timeline is not None, "needs --tensor-parallel-size > 1"
    stamp_token_waits(llm.engine.runner, workers.timeline)
    prompts = [[100 + (i * 7 + j) % 5000 for j in range(args.prompt_tokens)] for i in range(args.batch)]
    params = SamplingParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False)
    first = workers.steps_sent + 1  # the measured run's first step
    started = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    last = workers.steps_sent
    llm.shutdown()  # every rank writes its log
    rows = figures(_stamps(directory), range(first + 1 + args.skip, last - 1))  # decode steps only
    summary = {"tokens_per_s": args.batch * args.tokens / seconds, "steps": last - first + 1, "figures": rows}
    print(f"{summary['tokens_per_s']:.1f} tok/s over {summary['steps']} steps; µs per decode step:")
    for name, row in rows.items():
        print(f"  {name:20s} median {row['median']:9.1f}  p10 {row['p10']:9.1f}  p90 {row['p90']:9.1f}")
    (directory / "figures.json").write_text(json.dumps(summary, indent=1))
    print(f"logs and figures.json in {directory}")


if __name__ == "__main__":
    main()
