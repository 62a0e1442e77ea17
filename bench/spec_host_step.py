"""The host's cost of a speculative (n-gram) verify step against a plain decode step, for one sequence.

On the CPU (default) the model is a stub that answers at once, the way a CUDA-graph replay costs the
host almost nothing: token t's logits put all their mass on its successor in a cycle, and the prompt is
that cycle repeated, so greedy decoding continues it and every n-gram proposal is accepted (as with the
copy workload). Everything else is the engine's own path: scheduler and proposer, input builder,
runner (metadata, sampling, rejection sampling, collect), settling (rollback, stats, k policy) and the
output processor (detokenization of every emitted token). Each phase is timed per step, and each
figure is its median over the timed steps of `--repeat` runs (robust to a busy machine).

On a GPU, `--model random:qwen3-0.6b` runs the real model with its CUDA graphs; steps are then timed
with the device synchronized before and after, and `collect` includes the wait for the device.

Usage: PYTHONPATH=. python bench/spec_host_step.py [--k 4] [--steps 200] [--repeat 3] [--profile]
       PYTHONPATH=. python bench/spec_host_step.py --model random:qwen3-0.6b [--sync-debug warn]  # GPU
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import pstats
import statistics
import time
from collections.abc import Iterator

import torch
from host_step import PHASE_TIMES, timed  # bench/host_step.py (this script's folder): the phase timers

from tokenmill import SamplingParams
from tokenmill.bench.copy_workload import CopyWorkload
from tokenmill.config import EngineConfig
from tokenmill.engine.llm_engine import LLMEngine

PHASES = (
    "schedule",
    "propose",
    "build_inputs",
    "forward",
    "sample",
    "collect",
    "update",
    "settle",
    "outputs",
)
PERIOD = 97  # tokens in the stub's cycle: longer than any n-gram, so lookups see a real context
FIRST = 3  # the cycle's first token id (clear of special ids)


class CycleModel:
    """Stands in for the forward pass: a token's 'hidden state' is its id, and its logits put all the
    mass on the next token of the cycle FIRST, FIRST + 1, ..., FIRST + PERIOD - 1."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: object) -> torch.Tensor:
        return input_ids

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        successor = FIRST + (hidden - FIRST + 1) % PERIOD
        logits = torch.zeros(len(hidden), self.vocab_size)
        logits[torch.arange(len(hidden)), successor] = 1.0
        return logits


def make_engine(args: argparse.Namespace, speculate: bool) -> LLMEngine:
    config = EngineConfig(
        model=args.model or "random:qwen3-tiny",
        max_num_seqs=8,
        max_model_len=4096,
        speculative_method="ngram" if speculate else "none",
        num_speculative_tokens=args.k,
        speculative_adaptive=not args.no_adaptive,
    )
    engine = LLMEngine(config)
    runner = engine.runner
    if args.model is None:
        runner.model = CycleModel(engine.model_config.vocab_size)
        runner.run_model = timed("forward", runner.run_model)
    scheduler = engine.scheduler
    scheduler.schedule = timed("schedule", scheduler.schedule)
    if engine.speculator is not None:
        engine.speculator.propose = timed("propose", engine.speculator.propose)
    runner.inputs.build_inputs = timed("build_inputs", runner.inputs.build_inputs)
    runner.sample = timed("sample", runner.sample)
    runner.collect = timed("collect", runner.collect)
    engine._update_from_output = timed("update", engine._update_from_output)
    scheduler.settle_proposals = timed("settle", scheduler.settle_proposals)
    engine.output_processor.outputs = timed("outputs", engine.output_processor.outputs)
    return engine


def synchronize(engine: LLMEngine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)


@contextlib.contextmanager
def hidden_syncs(engine: LLMEngine, mode: str | None) -> Iterator[None]:
    """With `mode` ('warn' or 'error') on CUDA, PyTorch reports every operation inside that waits for the
    device (a blocking upload, `.item()`, `.tolist()` of a device tensor): a step should wait only
    for its sampled tokens' event."""
    if mode is None or engine.device.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def run(engine: LLMEngine, args: argparse.Namespace, tag: str) -> list[dict[str, float]]:
    """Generate `args.steps` steady steps of one stream; the ms of each phase and of the whole step, and
    the tokens it emitted, of every verify step (or, without speculation, every decode step)."""
    if args.model is None:
        prompt = [FIRST + i % PERIOD for i in range(args.prompt_len)]
    else:  # bench/spec_decode.py's copy workload (a random model's output loops: n-gram catches that)
        prompt = CopyWorkload("copy").requests(engine.tokenizer)[0][0]
    params = SamplingParams(temperature=0, max_tokens=args.steps * (args.k + 1), ignore_eos=True)
    engine.add_request(tag, prompt, params, stream=True)
    for _ in range(args.warmup):
        engine.step()
    steps: list[dict[str, float]] = []
    while engine.has_unfinished_requests() and len(steps) < args.steps:
        PHASE_TIMES.clear()
        seq = engine.scheduler.running[0]
        before, drafts = seq.num_tokens, engine.stats.spec_drafts
        synchronize(engine)
        started = time.perf_counter()
        with hidden_syncs(engine, args.sync_debug):
            engine.step()
        synchronize(engine)
        elapsed = time.perf_counter() - started
        if (engine.stats.spec_drafts > drafts) == (engine.speculator is not None):
            times = {phase: PHASE_TIMES[phase] * 1000 for phase in PHASES}
            steps.append(times | {"step": elapsed * 1000, "tokens": seq.num_tokens - before})
    engine.abort_request(tag)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", help="a real model (GPU); default: random:qwen3-tiny with a stub forward")
    parser.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    parser.add_argument("--no-adaptive", action="store_true", help="speculate k tokens every step")
    parser.add_argument("--prompt-len", type=int, default=1000, help="of the stub's prompt")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians over all their steps)")
    parser.add_argument("--sync-debug", choices=("warn", "error"), help="CUDA: report hidden syncs in steps")
    parser.add_argument("--profile", action="store_true", help="cProfile's top entries of each case")
    args = parser.parse_args()
    columns = (*PHASES, "step")
    print(f"host ms per step, one sequence, prompt {args.prompt_len} tokens, model {args.model or 'stub'}")
    print(f"{'case':10} " + " ".join(f"{c:>12}" for c in columns) + f" {'tokens':>12}")
    for speculate in (False, True):
        engine = make_engine(args, speculate)
        gc.collect()
        gc.freeze()
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        steps = [step for repeat in range(args.repeat) for step in run(engine, args, f"{speculate}-{repeat}")]
        if profiler:
            profiler.disable()
        name = f"verify k={args.k}" if speculate else "decode"
        if not steps:
            print(f"{name:10} (no such steps: speculation never ran)")
            continue
        median = {c: statistics.median(step[c] for step in steps) for c in (*columns, "tokens")}
        print(f"{name:10} " + " ".join(f"{median[c]:12.3f}" for c in columns) + f" {median['tokens']:12.2f}")
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
