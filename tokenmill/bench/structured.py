"""Structured outputs in the offline benchmark: every request under a JSON schema, and compile times.

`--structured json` gives every request the same schema, an object whose one string must be longer than
any output could be, so each request still makes exactly its workload's number of tokens: the run does
the plain run's work plus the grammar's (a matcher step and a bitmask row per token, the mask kernel on
the device, each step's sampling queued once the matchers have the previous tokens) and the two
throughputs compare directly.
"""

from __future__ import annotations

import time

from tokenmill.engine.llm_engine import LLMEngine
from tokenmill.structured_output import StructuredOutputsParams

MODES = ("json",)
CHARS_PER_TOKEN_BOUND = 16  # no token of a supported vocabulary spells more characters than this

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


def long_answer_schema(max_output_tokens: int) -> dict:
    """An object whose string cannot close before `max_output_tokens` tokens."""
    min_chars = CHARS_PER_TOKEN_BOUND * max_output_tokens
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "minLength": min_chars}},
        "required": ["answer"],
    }


def workload_constraint(mode: str, max_output_tokens: int) -> StructuredOutputsParams:
    if mode != "json":
        raise ValueError(f"structured must be one of {', '.join(MODES)}, got {mode!r}")
    return StructuredOutputsParams(json=long_answer_schema(max_output_tokens))


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
