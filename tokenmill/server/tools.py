"""Tool calling, the request side: what the chat template sees, how the answer is read, and the grammar
that makes a forced call (`tool_choice` required or named) always parse.

Forced calls follow vLLM: a named choice constrains the output to that function's arguments (its
`parameters` schema), `required` to a JSON array of {"name", "parameters"} objects, one schema per tool;
`auto` lets the model answer or call and reads Hermes `<tool_call>` tags; `none` hides the tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenmill.server.errors import APIError
from tokenmill.server.openai_requests import ChatCompletionRequest, NamedToolChoice
from tokenmill.server.structured_request import Constraint
from tokenmill.server.tool_parsers import HermesToolParser, NamedCallParser, RequiredCallsParser
from tokenmill.structured_output import StructuredOutputsParams

ToolParser = HermesToolParser | NamedCallParser | RequiredCallsParser
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class ToolUse:
    """How a chat request uses its tools: `mode` is none, auto, required or named (then `name`);
    without `parallel` (`parallel_tool_calls: false`), `required` makes exactly one call."""

    mode: str
    name: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    parallel: bool = True

    @classmethod
    def of(cls, body: ChatCompletionRequest) -> ToolUse:
        choice = body.tool_choice
        if not body.tools:
            if choice not in (None, "none"):
                raise APIError(400, "tool_choice needs tools", "tool_choice")
            return cls("none")
        tools = tuple(t.model_dump(exclude_none=True) for t in body.tools)
        if isinstance(choice, NamedToolChoice):
            names = [t.function.name for t in body.tools]
            if choice.function.name not in names:
                raise APIError(
                    400,
                    f"tool_choice names {choice.function.name!r}, not among tools ({', '.join(names)})",
                    "tool_choice.function.name",
                )
            return cls("named", choice.function.name, tools, body.parallel_tool_calls)
        return cls(choice or "auto", None, tools, body.parallel_tool_calls)

    def template_kwargs(self) -> dict[str, Any]:
        return {"tools": list(self.tools)} if self.mode != "none" else {}

    def constraint(self) -> Constraint | None:
        """The grammar a forced call needs, or None."""
        functions = [t["function"] for t in self.tools]
        if self.mode == "named":
            index = next(i for i, f in enumerate(functions) if f["name"] == self.name)
            schema = functions[index].get("parameters") or ANY_OBJECT
            return StructuredOutputsParams(json=schema), f"tools[{index}].function.parameters"
        if self.mode == "required":
            calls = [
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": [f["name"]]},
                        "parameters": f.get("parameters") or ANY_OBJECT,
                    },
                    "required": ["name", "parameters"],
                }
                for f in functions
            ]
            schema = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
            if not self.parallel:
                schema["maxItems"] = 1
            return StructuredOutputsParams(json=schema), "tools"
        return None

    def parser(self) -> ToolParser | None:
        if self.mode == "auto":
            return HermesToolParser()
        if self.mode == "named":
            assert self.name is not None
            return NamedCallParser(self.name)
        if self.mode == "required":
            return RequiredCallsParser()
        return None
