"""The host's cost of one engine step, with the model forward replaced by a stub that answers at once.

With async scheduling the host's work for step N (stop checks, text, outputs, scheduling, inputs of
step N+1) must fit inside the device's time for one step (~4.8 ms for 358 sequences of Qwen3-0.6B on an
H100), so this measures the real engine host path: scheduler, block manager, input builder, output
processor and detokenizer, with only `ModelRunner.launch`'s forward and sampling swapped for a cheap
token generator. Each figure is the least of `--repeat` runs (the machine's noise only adds); the gc
column is the time of garbage collections, which run inside the other phases.
Usage: PYTHONPATH=. python bench/host_step.py [--tokenizer byte|smollm2|both] [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import pstats
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tokenmill import SamplingParams
from tokenmill.config import EngineConfig
from tokenmill.engine.input_processor import InputProcessor
from tokenmill.engine.llm_engine import LLMEngine
from tokenmill.engine.model_runner import Launch, ModelRunner
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.models.loader import default_model_path
from tokenmill.tokenizer import Tokenizer

PHASES = ("schedule", "commit", "build_inputs", "stub", "update", "outputs")
COLUMNS = (*PHASES, "gc")
TEXT = Path(__file__).resolve().parent.parent / "data" / "official_test.txt"


class StubRunner(ModelRunner):
    """The real runner's input builder and `collect`, with the forward and sampler replaced by a lookup
    into a pool of real text tokens (so the detokenizer sees realistic pieces). Where an answer starts
    in the pool depends only on its prompt, so equal prompts get equal answers in any engine."""

    def __init__(self, real: ModelRunner, pool: np.ndarray) -> None:
        self.inputs, self.sampler, self.graphs = real.inputs, real.sampler, real.graphs
        self.device = real.device
        self.pool = pool
        self._starts: dict[int, int] = {}  # seq_id -> where its answer starts in the pool

    def _start(self, seq: Sequence) -> int:
        start = self._starts.get(seq.seq_id)
        if start is None:
            start = self._starts[seq.seq_id] = hash(tuple(seq.token_ids[: seq.num_prompt_tokens])) % 7919
        return start

    def launch(self, batch: ScheduledBatch, token_source: torch.Tensor | None = None) -> Launch:
        inputs = self.inputs.build_inputs(batch, token_source)
        seqs = inputs.sampling_seqs
        if not seqs:
            return Launch([], None, None, None, None)
        started = time.perf_counter()
        # a sequence's position after this step (its tokens are not all known yet if launched ahead)
        ends = {seq.seq_id: seq.num_computed_tokens + n for seq, n in zip(batch.seqs, batch.num_new_tokens)}
        where = np.array([self._start(seq) + ends[seq.seq_id] for seq in seqs]) % len(self.pool)
        sampled = torch.from_numpy(self.pool[where])
        PHASE_TIMES["stub"] += time.perf_counter() - started
        return Launch(seqs, sampled, sampled, None, None)


PHASE_TIMES: dict[str, float] = defaultdict(float)


def timed(phase: str, method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            PHASE_TIMES[phase] += time.perf_counter() - started

    return wrapper


def use_smollm2_tokenizer(engine: LLMEngine) -> None:
    """A real BPE vocabulary and chat template on a `random:` engine, whose own is byte-level."""
    tokenizer = Tokenizer.from_gguf(default_model_path())
    engine.tokenizer = engine.output_processor.tokenizer = tokenizer
    engine.input_processor = InputProcessor(tokenizer, tokenizer.vocab_size, engine.max_model_len)


def answer_token_pool(tokenizer: Tokenizer) -> np.ndarray:
    """The judge's sample text as token ids, special tokens left out (so no stub answer ends early)."""
    specials = set(tokenizer.hf.all_special_ids)
    ids = tokenizer.encode(TEXT.read_text(encoding="utf-8"), add_special_tokens=False)
    return np.array([t for t in ids if t not in specials], dtype=np.int64)


def make_engine(tokenizer_name: str, num_seqs: int) -> tuple[LLMEngine, np.ndarray]:
    engine = LLMEngine(
        EngineConfig(
            model="random:qwen3-tiny", max_num_seqs=num_seqs, max_num_batched_tokens=8192, max_model_len=512
        )
    )
    if tokenizer_name == "smollm2":
        use_smollm2_tokenizer(engine)
    pool = answer_token_pool(engine.tokenizer)
    engine.runner = StubRunner(engine.runner, pool)
    scheduler, inputs = engine.scheduler, engine.runner.inputs
    scheduler.schedule = timed("schedule", scheduler.schedule)
    scheduler.continue_decoding = timed("schedule", scheduler.continue_decoding)
    scheduler.commit = timed("commit", scheduler.commit)
    inputs.build_inputs = timed("build_inputs", inputs.build_inputs)
    engine._update_from_output = timed("update", engine._update_from_output)
    engine.output_processor.outputs = timed("outputs", engine.output_processor.outputs)
    return engine, pool


def time_garbage_collection(phase: str, info: dict) -> None:
    """A gc callback: collections run inside the phases, so this column overlaps the others."""
    if phase == "start":
        PHASE_TIMES["gc_started"] = time.perf_counter()
    else:
        PHASE_TIMES["gc"] += time.perf_counter() - PHASE_TIMES["gc_started"]


def run(engine: LLMEngine, pool: np.ndarray, stream: bool, args: argparse.Namespace, tag: str) -> dict:
    """Generate to the end; returns per-decode-step milliseconds of each phase and of the whole step."""
    params = SamplingParams(temperature=0, max_tokens=args.output_len, stop=args.stop or None)
    for i in range(args.num_seqs):
        start = (i * 131) % (len(pool) - args.prompt_len)
        engine.add_request(f"{tag}-{i}", pool[start : start + args.prompt_len].tolist(), params, stream)
    decode: dict[str, float] = defaultdict(float)
    steps = 0
    while engine.has_unfinished_requests():
        PHASE_TIMES.clear()
        before = engine.stats.decode_steps
        started = time.perf_counter()
        engine.step()
        elapsed = time.perf_counter() - started
        if engine.stats.decode_steps > before:
            steps += 1
            decode["step"] += elapsed
            for phase in COLUMNS:
                decode[phase] += PHASE_TIMES[phase]
    decode["update"] -= decode["outputs"]  # outputs are built inside the update
    return {name: seconds * 1000 / steps for name, seconds in decode.items()} | {"steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokenizer", choices=("byte", "smollm2", "both"), default="both")
    parser.add_argument("--num-seqs", type=int, default=358)
    parser.add_argument("--prompt-len", type=int, default=100)
    parser.add_argument("--output-len", type=int, default=200)
    parser.add_argument("--stop", action="append", help="a stop string (forces per-token text)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; each figure is the least")
    parser.add_argument("--profile", action="store_true", help="cProfile's top entries of each run")
    args = parser.parse_args()
    names = ("byte", "smollm2") if args.tokenizer == "both" else (args.tokenizer,)
    shape = f"{args.num_seqs} seqs x {args.prompt_len} prompt + {args.output_len} output tokens"
    print(f"{shape}; host ms per decode step")
    print(f"{'tokenizer':9} {'stream':6} " + " ".join(f"{p:>12}" for p in (*COLUMNS, "step")))
    gc.callbacks.append(time_garbage_collection)
    for name in names:
        for stream in (False, True):
            engine, pool = make_engine(name, args.num_seqs)
            gc.collect()  # as the server does after its warm-up: no later collection walks start-up's objects
            gc.freeze()
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            runs = [run(engine, pool, stream, args, str(repeat)) for repeat in range(args.repeat)]
            best = {column: min(r[column] for r in runs) for column in (*COLUMNS, "step")}
            print(f"{name:9} {stream!s:6} " + " ".join(f"{best[c]:12.3f}" for c in (*COLUMNS, "step")))
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
