"""What a request asks its output to match: one of a JSON schema, any JSON object, a regex, a choice of
strings or an EBNF grammar. Plain data, importable without the grammar engine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

KINDS = ("json", "json_object", "regex", "choice", "grammar")


@dataclass(frozen=True)
class StructuredOutputsParams:
    """Exactly one field set, as vLLM's `StructuredOutputsParams`: `json` is a JSON schema (a dict or its
    text), `json_object=True` any JSON object, `regex` a regular expression, `choice` a list of strings
    the whole output must equal one of, `grammar` an EBNF (GBNF-style) grammar whose rule `root` starts."""

    json: dict[str, Any] | str | None = None
    json_object: bool | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    def __post_init__(self) -> None:
        given = [kind for kind in KINDS if getattr(self, kind) not in (None, False)]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"structured_outputs must set exactly one of {', '.join(KINDS)} (got {found})")
        checks = {
            "json": isinstance(self.json, (dict, str)),
            "json_object": self.json_object is True,
            "regex": isinstance(self.regex, str) and bool(self.regex),
            "choice": isinstance(self.choice, list)
            and bool(self.choice)
            and all(isinstance(c, str) and c for c in self.choice),
            "grammar": isinstance(self.grammar, str) and bool(self.grammar.strip()),
        }
        requirement = {
            "json": "a JSON schema (an object or its JSON text)",
            "json_object": "true",
            "regex": "a non-empty string",
            "choice": "a non-empty list of non-empty strings",
            "grammar": "a non-empty EBNF grammar",
        }
        if not checks[self.kind]:
            raise ValueError(f"structured_outputs.{self.kind} must be {requirement[self.kind]}")

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) not in (None, False))

    @property
    def source(self) -> str:
        """The constraint as text: what the compiler reads and what its cache is keyed by."""
        if isinstance(self.json, dict):
            return json.dumps(self.json, ensure_ascii=False)  # key order is the output's order
        if self.choice is not None:
            return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in self.choice)
        return self.json or self.regex or self.grammar or ""

    @property
    def is_json(self) -> bool:
        return self.kind in ("json", "json_object")

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.source
