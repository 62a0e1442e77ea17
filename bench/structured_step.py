"""What structured outputs add to one decode step, part by part, without a model.

`--constrained` of `--batch` sequences are under one JSON schema (by default the offline benchmark's
`--structured json` one for `--steps` output tokens, or `--schema`), the rest plain, for `--steps` steps:
a whole output's length, since a grammar's cost per token can grow along the output (a long
length-bounded string's does), and the summary gives the first and the last quarter's medians. Each
step times, as the engine runs them:
the bitmask fill on the host (xgrammar, `--threads`), the upload of the filled rows, the mask kernel on
`--device` (these two waited for), and advancing every matcher by its token. Tokens are drawn greedily
from random logits among the allowed ones, so the matchers walk real paths through the schema.

With async scheduling the host's part (fill + advance) overlaps the device's forward pass (~4.8 ms for
358 sequences of Qwen3-0.6B on an H100); only the upload and the kernel sit on the device's path.
`--model random:qwen3-0.6b` uses the engine's tokenizer for random presets (256 bytes) padded to the
preset's 151,936 ids, as `tokenmill bench --model random:...` does.
Usage: PYTHONPATH=. python bench/structured_step.py [--model DIR|random:PRESET] [--batch 358]
       [--constrained N] [--threads N] [--steps 200] [--schema JSON] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from tokenmill.bench.structured import long_answer_schema, longest_token_bytes
from tokenmill.engine.sequence import Sequence
from tokenmill.models.loader import default_model_path
from tokenmill.models.presets import preset_config
from tokenmill.sampling_params import SamplingParams
from tokenmill.structured_output import StructuredOutputsParams
from tokenmill.structured_output.compiler import GrammarCompiler
from tokenmill.structured_output.manager import StructuredOutputs
from tokenmill.structured_output.token_mask import token_mask_op
from tokenmill.tokenizer import Tokenizer


def tokenizer_and_vocab(model: str | None) -> tuple[Tokenizer, int]:
    if model is None:
        tokenizer = Tokenizer.from_gguf(default_model_path())
        return tokenizer, len(tokenizer.hf)
    if model.startswith("random:"):
        return Tokenizer.byte_level(), preset_config(model.removeprefix("random:"))["vocab_size"]
    tokenizer = Tokenizer.from_directory(model)
    return tokenizer, len(tokenizer.hf)


class Stopwatch:
    """Milliseconds since the previous lap, the device's queued work waited for first."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.last = time.perf_counter()

    def lap(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        previous, self.last = self.last, time.perf_counter()
        return 1000 * (self.last - previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF directory or random:<preset>; default SmolLM2")
    parser.add_argument("--batch", type=int, default=358)
    parser.add_argument("--constrained", type=int, default=None, help="sequences under the schema (all)")
    parser.add_argument("--threads", type=int, default=None, help="fill threads (default min(8, cores))")
    parser.add_argument("--steps", type=int, default=200, help="output tokens per sequence (qa-358's)")
    parser.add_argument("--schema", type=json.loads, default=None, help="JSON schema (the benchmark's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the engine's default logits
    tokenizer, vocab = tokenizer_and_vocab(args.model)
    compiler = GrammarCompiler(tokenizer, vocab, (tokenizer.eos_token_id or 0,))
    schema = args.schema or long_answer_schema(args.steps, longest_token_bytes(tokenizer))
    clock = Stopwatch(device)
    _ = compiler.xgrammar_compiler
    prepare_ms = clock.lap()
    constraint = StructuredOutputsParams(json=schema)
    compiler.compile(constraint)
    compile_ms = clock.lap()
    mask_op = token_mask_op("triton" if device.type == "cuda" else "torch")
    structured = StructuredOutputs(compiler, args.threads, mask_op, device)
    constrained = args.batch if args.constrained is None else args.constrained
    plain, under_schema = SamplingParams(), SamplingParams(structured_outputs=constraint)
    seqs = [
        Sequence("r", i, [1], under_schema if i < constrained else plain, torch.device("cpu"))
        for i in range(args.batch)
    ]
    structured.attach(seqs[:constrained], constraint)
    parts: dict[str, list[float]] = {"fill": [], "upload": [], "mask kernel": [], "advance": []}
    for _ in range(args.steps):
        logits = torch.randn(args.batch, vocab, device=device, dtype=dtype)
        clock.lap()
        mask = structured.fill(seqs)
        parts["fill"].append(clock.lap())
        if mask is not None:  # None: no constrained sequence
            on_device = mask.to(device)
            parts["upload"].append(clock.lap())
            structured.apply(logits, on_device)
            parts["mask kernel"].append(clock.lap())
        tokens = logits.argmax(dim=-1).tolist()
        clock.lap()
        for seq, token in zip(seqs[:constrained], tokens):
            structured.accept(seq, token)
        parts["advance"].append(clock.lap())
    quarter = max(1, args.steps // 4)
    early = {name: statistics.median(times[:quarter] or [0.0]) for name, times in parts.items()}
    late = {name: statistics.median(times[-quarter:] or [0.0]) for name, times in parts.items()}
    print(
        f"vocab {vocab} (grammar {compiler.grammar_vocab_size}), batch {args.batch}, constrained "
        f"{constrained}, fill threads {structured.fill_threads}, device {device}"
    )
    print(f"vocabulary preparation {prepare_ms:.0f} ms, schema compile {compile_ms:.1f} ms")
    print(
        f"per step, medians of steps 1-{quarter} | {args.steps - quarter + 1}-{args.steps}: "
        + ", ".join(f"{name} {early[name]:.3f} | {late[name]:.3f} ms" for name in parts)
        + f"; host (fill + advance) {early['fill'] + early['advance']:.3f} | "
        f"{late['fill'] + late['advance']:.3f} ms"
    )


if __name__ == "__main__":
    main()
