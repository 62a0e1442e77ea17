"""Grammar compilation with xgrammar, for one tokenizer and vocabulary, thread-safe and cached.

Compiling a JSON schema walks the whole vocabulary (milliseconds to a second for a large one), so the
server compiles on its prompt threads before a request reaches the engine; the engine's own compile of
the same constraint is then a cache hit. xgrammar is imported on the first compile, so a server that
never sees a grammar never loads it.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections import OrderedDict
from typing import Any

from tokenmill.structured_output.params import StructuredOutputsParams
from tokenmill.structured_output.text_guards import TextGuards
from tokenmill.tokenizer import Tokenizer

# xgrammar's compile time grows steeply with a schema's nesting (CPU, a 49k vocabulary: arrays nested
# 400 deep take 3 s, 900 deep 29 s, 1,500 deep, sent as text, 133 s), on a prompt thread nothing can
# interrupt; real schemas nest a few levels (and recurse through `$ref`, which costs nothing).
MAX_SCHEMA_DEPTH = 128
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")
_CPP_LOCATION = re.compile(r"\[[0-9:.]+\] \S+\.cc:\d+: (Check failed: \(.*?\) is false: )?")
_ANY_OBJECT = '{"type": "object"}'
# Schema keywords whose object is keyed by property names, and those whose value is a JSON literal
_BY_PROPERTY_NAME = frozenset(
    {
        "properties",
        "patternProperties",
        "$defs",
        "definitions",
        "dependentSchemas",
        "dependentRequired",
        "dependencies",
    }
)
_LITERALS = frozenset({"const", "enum", "default", "examples"})
_WHAT = {
    "json": "invalid JSON schema",
    "json_object": "invalid JSON grammar",
    "regex": "invalid regular expression",
    "choice": "invalid choice",
    "grammar": "invalid EBNF grammar",
}


class GrammarError(ValueError):
    """A constraint the grammar engine refused; `kind` names the StructuredOutputsParams field."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"structured_outputs.{kind}: {reason}")
        self.kind = kind
        self.reason = reason


def import_xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as exc:
        raise RuntimeError(
            "structured outputs need the xgrammar package: pip install 'xgrammar>=0.2'"
        ) from exc
    return xgrammar


class GrammarCompiler:
    """Compiles `StructuredOutputsParams` to xgrammar `CompiledGrammar`s, the last `cache_size` kept by
    `params.key`. JSON is compact (no free whitespace): a model cannot then stall in a run of spaces.

    The grammar's vocabulary is the tokenizer's ids (`grammar_vocab_size`), not the model's padded
    vocabulary: xgrammar counts each padding id as a special token, and its work per accepted token
    grows with their number (36-62 us with the 151,677 of a byte tokenizer in Qwen3's 151,936 ids, as the
    random presets have, against 1-6 us without). The mask kernel bans constrained rows' padding ids."""

    def __init__(
        self, tokenizer: Tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...], cache_size: int = 256
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = stop_token_ids
        self.cache_size = cache_size
        self._compiler: Any = None
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.guards: TextGuards | None = None  # built with the compiler, from its view of the vocabulary

    @functools.cached_property
    def grammar_vocab_size(self) -> int:
        """One past the largest id the tokenizer produces (read on first use), within the model's."""
        ids = self.tokenizer.hf.get_vocab()
        return min(self.vocab_size, max(len(ids), max(ids.values(), default=-1) + 1))

    @property
    def xgrammar_compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                xgr = import_xgrammar()
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer.hf,
                    vocab_size=self.grammar_vocab_size,
                    stop_token_ids=[t for t in self.stop_token_ids if t < self.grammar_vocab_size] or None,
                )
                self._compiler = xgr.GrammarCompiler(info, cache_enabled=False)
                self.guards = TextGuards(info.decoded_vocab, self.grammar_vocab_size)
            return self._compiler

    def compile(self, params: StructuredOutputsParams) -> Any:
        """The compiled grammar of `params`; raises GrammarError (a ValueError) naming the field."""
        key = params.key
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        compiled = self._compile(params)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return compiled

    def new_matcher(self, compiled: Any) -> Any:
        """A fresh xgrammar `GrammarMatcher` of a compiled grammar, at the start of the output."""
        return import_xgrammar().GrammarMatcher(
            compiled, terminate_without_stop_token=not self.stop_token_ids
        )

    def _compile(self, params: StructuredOutputsParams) -> Any:
        if params.kind == "json":
            _check_schema(params)
        compiled = self._xgrammar_compile(params)
        if not self._can_begin(compiled):
            reason = "no text matches it (no token of this model's vocabulary can begin a match)"
            raise GrammarError(params.kind, reason)
        return compiled

    def _can_begin(self, compiled: Any) -> bool:
        """Whether an output can start: the grammar allows a first token, or ends at once. Neither
        means its language is empty (a rule that only recurses, a character class of nothing), which
        the sampler would meet as a first step with no token allowed."""
        matcher = self.new_matcher(compiled)
        bitmask = import_xgrammar().allocate_token_bitmask(1, self.grammar_vocab_size)
        matcher.fill_next_token_bitmask(bitmask)
        return bool(bitmask.any()) or matcher.is_terminated()

    def _xgrammar_compile(self, params: StructuredOutputsParams) -> Any:
        compiler = self.xgrammar_compiler
        kind = params.kind
        try:
            if kind == "json":
                return compiler.compile_json_schema(params.source, any_whitespace=False)
            if kind == "json_object":  # any object: properties not named by a schema stay allowed
                return compiler.compile_json_schema(_ANY_OBJECT, any_whitespace=False, strict_mode=False)
            if kind == "regex":
                return compiler.compile_regex(params.source)
            return compiler.compile_grammar(params.source)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise GrammarError(kind, f"{_WHAT[kind]}: {_readable(exc)}") from None


def _check_schema(params: StructuredOutputsParams) -> None:
    """Refuse, naming the field, a schema xgrammar would take too long to compile or would not hold the
    output to: `not` is ignored, so `{"not": {}}`, which nothing matches, would let anything through."""
    depth = nesting_depth(params.source)
    if depth > MAX_SCHEMA_DEPTH:
        reason = f"the schema nests {depth} levels deep; at most {MAX_SCHEMA_DEPTH} are accepted"
        raise GrammarError("json", reason)
    try:  # the depth check keeps the parser's recursion shallow
        schema = json.loads(params.json) if isinstance(params.json, str) else params.json
    except ValueError:
        return  # not JSON: xgrammar's compile says where
    if schema_uses(schema, "not"):
        reason = "the schema uses `not`, which xgrammar ignores (the output would not be held to it)"
        raise GrammarError("json", reason)


def schema_uses(schema: Any, keyword: str) -> bool:
    """Whether a JSON schema, or any schema inside it, has `keyword`; property names and literal values
    (`const`, `enum`, ...) that spell it do not count."""
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if keyword in node:
                return True
            for name, value in node.items():
                if name in _BY_PROPERTY_NAME and isinstance(value, dict):
                    pending.extend(value.values())
                elif name not in _LITERALS:
                    pending.append(value)
    return False


def nesting_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in JSON text, strings skipped; read without parsing
    it, since the text may nest deeper than Python's parser recurses."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _readable(exc: Exception) -> str:
    """xgrammar's C++ message without its timestamp and source location."""
    return _CPP_LOCATION.sub("", str(exc)).strip().splitlines()[0] if str(exc).strip() else repr(exc)
