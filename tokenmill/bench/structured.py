"""Structured outputs in the offline benchmark: every request under a JSON schema, and compile times.

`--structured json` gives every request the same schema, one no output of the workload's length can
complete, so each request still makes exactly its workload's number of tokens: the run does the plain
run's work plus the grammar's (a matcher step and a bitmask row per token, the mask kernel on the
device, each step's sampling queued once the matchers have the previous tokens) and the two throughputs
compare directly.

The schema's length comes from many short strings, not one long one: xgrammar's work per accepted
character grows with the position inside a length-bounded string (CPU, byte vocabulary: 2 us per token
in the first 50 characters of a string of minLength 3,200, 35 us at 200-400, 120 us at 800-1,600), so a
single 3,200-character string made the grammar, not the model, the benchmark's subject. Strings of
minLength 64 or 128 cost about 1.7 us per token wherever they sit, as an unbounded string does (1.3);
256 already costs 20-30 us.
"""

from __future__ import annotations

import math
import time

from tokenmill.engine.llm_engine import LLMEngine
from tokenmill.structured_output import StructuredOutputsParams
from tokenmill.structured_output.compiler import import_xgrammar
from tokenmill.tokenizer import Tokenizer

MODES = ("json",)
ITEM_CHARS = 64  # each string's minLength: short enough that xgrammar's cost per token stays flat

# Schemas whose compile time the result states: the benchmark's own and typical API ones.
COMPILE_SCHEMAS: dict[str, dict] = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["name", "age", "ok"],
    },
    "nested_refs": {
        "$defs": {
            "addr": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
        "type": "object",
        "properties": {
            "people": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "home": {"$ref": "#/$defs/addr"}},
                    "required": ["name", "home"],
                },
            },
            "kind": {"enum": ["a", "b", "c"]},
        },
        "required": ["people", "kind"],
    },
}


def longest_token_bytes(tokenizer: Tokenizer) -> int:
    """The most bytes any token of `tokenizer` spells, as the grammar engine decodes it: an upper bound on
    the characters one token adds to a JSON string (a character is at least one byte). Vocabularies
    differ widely: 13 for the random presets' byte tokenizer, 81 for SmolLM2 (runs of '#' or spaces)."""
    info = import_xgrammar().TokenizerInfo.from_huggingface(tokenizer.hf)
    return max(map(len, info.decoded_vocab))


def long_answer_schema(max_output_tokens: int, longest_token: int) -> dict:
    """An object no output of fewer than `max_output_tokens` tokens can complete, with tokens of at
    most `longest_token` bytes: its array needs that many tokens' worth of string characters before it
    may close. What else the grammar allows between strings (quotes, separators, whitespace) only
    lengthens the text, so the bound holds whatever the JSON layout."""
    min_items = math.ceil(max_output_tokens * longest_token / ITEM_CHARS)
    strings = {"type": "string", "minLength": ITEM_CHARS}
    return {
        "type": "object",
        "properties": {"answer": {"type": "array", "items": strings, "minItems": min_items}},
        "required": ["answer"],
    }


def workload_constraint(mode: str, max_output_tokens: int, tokenizer: Tokenizer) -> StructuredOutputsParams:
    if mode != "json":
        raise ValueError(f"structured must be one of {', '.join(MODES)}, got {mode!r}")
    return StructuredOutputsParams(json=long_answer_schema(max_output_tokens, longest_token_bytes(tokenizer)))


def compile_times_ms(engine: LLMEngine, workload: StructuredOutputsParams | None) -> dict[str, float]:
    """Milliseconds to compile each schema once, uncached (a fresh title makes each one new), after
    the one-time vocabulary preparation, which is reported as `tokenizer_info`."""
    compiler = engine.structured.compiler
    started = time.perf_counter()
    _ = compiler.xgrammar_compiler
    times = {"tokenizer_info": round(1000 * (time.perf_counter() - started), 1)}
    schemas = dict(COMPILE_SCHEMAS)
    if isinstance(workload, StructuredOutputsParams) and isinstance(workload.json, dict):
        schemas["workload"] = workload.json
    for name, schema in schemas.items():
        fresh = {**schema, "title": f"bench-{time.monotonic_ns()}"}
        started = time.perf_counter()
        compiler.compile(StructuredOutputsParams(json=fresh))
        times[name] = round(1000 * (time.perf_counter() - started), 1)
    return times
