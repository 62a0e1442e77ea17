"""The offline benchmark's `--structured json` schema: no output shorter than the workload's can complete
it, whatever the vocabulary, so a constrained run makes exactly the plain run's tokens."""

from __future__ import annotations

import numpy as np
import pytest
import xgrammar as xgr

from tokenmill.bench.offline import greedy_params
from tokenmill.bench.structured import (
    ITEM_CHARS,
    long_answer_schema,
    longest_token_bytes,
    workload_constraint,
)
from tokenmill.engine.llm import LLM
from tokenmill.models.loader import default_model_path
from tokenmill.structured_output import StructuredOutputsParams
from tokenmill.structured_output.compiler import GrammarCompiler
from tokenmill.tokenizer import Tokenizer

MAX_TOKENS = 24


def shortest_completion(tokenizer: Tokenizer, schema: dict) -> int:
    """Tokens an adversarial writer needs before the schema is complete (its stop token allowed). Each
    step it takes the longest allowed token of the first kind there is of: starting with a quote and
    closing the array or object (`"]`); starting with a quote (closing a string as soon as it may, or
    opening the next); inside a string (where a letter is allowed), any; between strings, starting
    with a bracket or brace."""
    compiler = GrammarCompiler(tokenizer, len(tokenizer.hf), (tokenizer.eos_token_id or 0,))
    compiled = compiler.compile(StructuredOutputsParams(json=schema))
    matcher = xgr.GrammarMatcher(compiled)
    vocab = compiler.grammar_vocab_size
    decoded = compiled.tokenizer_info.decoded_vocab[:vocab]
    lengths = np.array([len(text) for text in decoded])
    quotes = np.array([text.startswith(b'"') for text in decoded])
    closers = np.array([text[:1] in (b"]", b"}") for text in decoded])
    ends = quotes & np.array([b"]" in text or b"}" in text for text in decoded])
    letter, stop = decoded.index(b"a"), tokenizer.eos_token_id or 0
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    for written in range(100_000):
        matcher.fill_next_token_bitmask(bitmask)
        allowed = np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")[:vocab].astype(bool)
        if allowed[stop]:
            return written
        if (allowed & ends).any():
            allowed &= ends
        elif (allowed & quotes).any():
            allowed &= quotes
        elif not allowed[letter] and (allowed & closers).any():
            allowed &= closers
        assert matcher.accept_token(int(np.argmax(np.where(allowed, lengths, -1))))
    raise AssertionError("the walk never completed the schema")


@pytest.mark.parametrize("vocabulary", ["byte-level", pytest.param("smollm2", marks=pytest.mark.slow)])
def test_no_output_shorter_than_the_workload_completes_the_schema(vocabulary: str) -> None:
    """SmolLM2 has tokens of 81 bytes (runs of '#'), so a bound of 16 characters per token, as the
    benchmark assumed before, let this walk complete a 24-token schema in a handful of tokens."""
    tokenizer = (
        Tokenizer.byte_level() if vocabulary == "byte-level" else Tokenizer.from_gguf(default_model_path())
    )
    longest = longest_token_bytes(tokenizer)
    assert longest == {"byte-level": 13, "smollm2": 81}[vocabulary]
    schema = long_answer_schema(MAX_TOKENS, longest)
    assert schema["properties"]["answer"]["items"]["minLength"] == ITEM_CHARS
    assert MAX_TOKENS <= shortest_completion(tokenizer, schema) < 5 * MAX_TOKENS


@pytest.mark.slow
def test_a_tiny_models_run_under_the_benchmark_schema_makes_every_requests_tokens(tiny_model_dir) -> None:
    """The benchmark's own requests (greedy, ignore_eos) under its constraint: each makes exactly its
    output length and stops on length, not on the grammar."""
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", max_model_len=512, max_num_seqs=8)
    requests = [([5 + i, 9, 11], out) for i, out in enumerate([48, 48, 31, 7, 48, 20])]
    constraint = workload_constraint("json", 48, llm.engine.tokenizer)
    outputs = llm.generate(
        [prompt for prompt, _ in requests], greedy_params(requests, constraint), use_tqdm=False
    )
    made = [(len(o.outputs[0].token_ids), o.outputs[0].finish_reason) for o in outputs]
    assert made == [(out, "length") for _, out in requests]
    assert all(
        o.outputs[0].text.startswith('{"answer": ["') for o in outputs if len(o.outputs[0].token_ids) >= 13
    )
