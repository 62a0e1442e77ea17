"""A request's output constraint, from whichever spelling it used, compiled before it is admitted.

`response_format`, `structured_outputs` and the `guided_*` fields are three spellings of one thing; a
request may use one. Compiling runs on the prompt threads (a large schema takes a while, and the event
loop must stay free), so a bad constraint is a 400 naming its field before any stream starts, and the
engine later finds the compiled grammar in its cache.
"""

from __future__ import annotations

from typing import Any

from tokenmill.server.errors import APIError
from tokenmill.server.openai_requests import ResponseFormat, StructuredOutputsBody
from tokenmill.server.state import ServerState
from tokenmill.structured_output import StructuredOutputsParams
from tokenmill.structured_output.compiler import GrammarError

Constraint = tuple[StructuredOutputsParams, str]  # and the request field it came from


def _response_format(response_format: ResponseFormat | None) -> list[tuple[dict[str, Any], str]]:
    if response_format is None or response_format.type == "text":
        return []
    if response_format.type == "json_object":
        return [({"json_object": True}, "response_format")]
    if response_format.json_schema is None:
        raise APIError(
            400, "response_format.json_schema is required when type is json_schema", "response_format"
        )
    schema = response_format.json_schema.schema_
    if schema is None:
        return [({"json_object": True}, "response_format.json_schema")]
    return [({"json": schema}, "response_format.json_schema.schema")]


def _structured_outputs(body: StructuredOutputsBody | None) -> list[tuple[dict[str, Any], str]]:
    if body is None:
        return []
    fields = body.model_dump(by_alias=True, exclude_none=True)
    given = [name for name, value in fields.items() if value is not False]
    param = f"structured_outputs.{given[0]}" if len(given) == 1 else "structured_outputs"
    return [(fields, param)]


def requested_constraint(body: Any) -> Constraint | None:
    """The one constraint a completions or chat body asks for, or None; 400 if it asks for several."""
    found = _response_format(body.response_format) + _structured_outputs(body.structured_outputs)
    for kind in ("json", "regex", "choice", "grammar"):
        value = getattr(body, f"guided_{kind}")
        if value is not None:
            found.append(({kind: value}, f"guided_{kind}"))
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(param for _, param in found)
        raise APIError(400, f"give one output constraint, not several ({names})", found[1][1])
    fields, param = found[0]
    try:
        return StructuredOutputsParams(**fields), param
    except ValueError as exc:
        raise APIError(400, f"{param}: {exc}", param) from None


async def compile_constraint(state: ServerState, constraint: Constraint | None) -> None:
    """Compile on the prompt threads; a constraint the grammar engine refuses is a 400 naming the field."""
    if constraint is None:
        return
    params, param = constraint
    structured = state.lifecycle.running_engine().engine.structured
    try:
        await state.prompts.run(structured.compile, params)
    except GrammarError as exc:
        raise APIError(400, f"{param}: {exc.reason}", param) from None
    except RuntimeError as exc:  # xgrammar is not installed
        raise APIError(501, str(exc), param) from None
