"""The text forms some configuration values arrive in, and their parsing: LoRA adapter items, memory sizes.

Flags and environment variables give these values as strings, in the forms vLLM's users write
(`name=path`, a JSON object, `32GiB`). Their parsing lives here, apart from the field list, so that
config.py stays the list of knobs and the few callers needing the parsed form share one parser.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class LoRAModule(BaseModel):
    """One start-up adapter of `lora_modules`, in vLLM's JSON form; `base_model_name` is the parent
    /v1/models lists for it (default: the served model)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    base_model_name: str | None = None

    @classmethod
    def parse(cls, item: object) -> LoRAModule:
        """`name=path`, a JSON object text, or a dict."""
        if isinstance(item, str) and item.lstrip().startswith("{"):
            item = json.loads(item)
        if isinstance(item, dict):
            return cls.model_validate(item)
        name, equals, path = str(item).partition("=")
        if not (name and equals and path):
            raise ValueError(f"lora_modules items look like name=path or a JSON object, got {item!r}")
        return cls(name=name, path=path)

    def text(self) -> str:
        """The canonical item: `name=path`, or the JSON object when it says more than that."""
        if self.base_model_name is None:
            return f"{self.name}={self.path}"
        return self.model_dump_json()


def canonical_lora_modules(value: Any) -> list[str]:
    """Each item of `lora_modules` in its canonical text (see `LoRAModule.text`). A single string is the
    environment's form: a JSON list or object, or items separated by whitespace."""
    try:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith(("[", "{")) else text.split()
        items = [value] if isinstance(value, dict) else value
        return [LoRAModule.parse(item).text() for item in items]
    except json.JSONDecodeError as exc:
        raise ValueError(f"lora_modules: a JSON item does not parse: {exc}") from exc


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_bytes(text: str) -> int:
    """'32GiB' -> 34359738368; also GB, MiB, MB, plain bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"max_gpu_memory must look like 32GiB or 24GB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])
