"""The host's and the device's extra cost of structured outputs per decode step, without a model.

For a batch of sequences all under one JSON schema, each step times what the engine adds: the bitmask
fill (xgrammar, on the host), the text guards, the mask applied to [batch, vocab] logits on `--device`,
and advancing every matcher by its sampled token. Tokens are drawn (greedily, from random logits) among
the allowed ones, so the matchers walk real paths through the schema. Compare the total with the
device's time for one decode step (~4.8 ms for 358 sequences of Qwen3-0.6B on an H100): with async
scheduling off for such batches, this is added to every step.
Usage: PYTHONPATH=. python bench/structured_step.py [--model DIR] [--batch 358] [--steps 64] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tokenmill.engine.sequence import Sequence
from tokenmill.models.loader import default_model_path
from tokenmill.sampling_params import SamplingParams
from tokenmill.structured_output import StructuredOutputsParams
from tokenmill.structured_output.compiler import GrammarCompiler
from tokenmill.structured_output.manager import StructuredOutputs
from tokenmill.tokenizer import Tokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 4096},
        "confidence": {"type": "number"},
    },
    "required": ["answer", "confidence"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF model directory (its tokenizer); default SmolLM2")
    parser.add_argument("--batch", type=int, default=358)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model = args.model
    tokenizer = Tokenizer.from_directory(model) if model else Tokenizer.from_gguf(default_model_path())
    vocab = len(tokenizer.hf)
    device = torch.device(args.device)
    compiler = GrammarCompiler(tokenizer, vocab, (tokenizer.eos_token_id or 0,))
    started = time.perf_counter()
    _ = compiler.xgrammar_compiler
    prepare = time.perf_counter() - started
    params = SamplingParams(structured_outputs=StructuredOutputsParams(json=SCHEMA))
    started = time.perf_counter()
    compiler.compile(params.structured_outputs)  # type: ignore[arg-type]
    compile_s = time.perf_counter() - started
    structured = StructuredOutputs(compiler)
    seqs = [Sequence("r", i, [1], params, torch.device("cpu")) for i in range(args.batch)]
    structured.attach(seqs, params.structured_outputs)  # type: ignore[arg-type]
    mask_ms, advance_ms = [], []
    for _ in range(args.steps):
        logits = torch.randn(args.batch, vocab, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        structured(logits, seqs)
        tokens = logits.argmax(dim=-1).tolist()  # waits for the device
        mask_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        for seq, token in zip(seqs, tokens):
            structured.advance(seq, token)
        advance_ms.append(1000 * (time.perf_counter() - started))
    print(f"vocab {vocab}, batch {args.batch}, device {device}")
    print(f"vocabulary preparation {prepare * 1000:.0f} ms, schema compile {compile_s * 1000:.0f} ms")
    print(f"per step: mask (fill + guards + apply) {statistics.median(mask_ms):.2f} ms, "
          f"advance {statistics.median(advance_ms):.2f} ms (medians of {args.steps})")  # fmt: skip


if __name__ == "__main__":
    main()
