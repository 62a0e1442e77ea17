"""The strict field types every request body is built from, and the base class of those bodies.

Kept apart from the bodies so that the rules hold alike for every protocol (OpenAI, FastDeploy, the
judge, gRPC): a wrong type is a 400 and never a silent conversion, every string must be valid Unicode
(JSON lets a body hold lone surrogates, which no tokenizer can encode) and every integer must fit the
engine's integer types, so that such input is a 400 naming the field rather than a failure deep in the
tokenizer or in torch.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

INT32_MAX = 2**31 - 1


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode (a lone surrogate, which UTF-8 cannot encode), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}"
    return None


def require_unicode(value: Any) -> Any:
    """Rejects a string, or a list of strings, holding text no tokenizer can encode."""
    texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    for index, text in enumerate(texts):
        problem = unicode_problem(text) if isinstance(text, str) else None
        if problem:
            where = "" if isinstance(value, str) else f"item {index} "
            raise PydanticCustomError(
                "invalid_unicode",
                "{where}is not valid Unicode text: {problem}",
                {"where": where, "problem": problem},
            )
    return value


UnicodeChecked = BeforeValidator(require_unicode)
Text = Annotated[StrictStr, UnicodeChecked]
Temperature = Annotated[float, Field(ge=0, le=100, strict=True)]
Probability = Annotated[float, Field(ge=0, le=1, strict=True)]
Penalty = Annotated[float, Field(ge=-2, le=2, strict=True)]
PositiveInt = Annotated[StrictInt, Field(ge=1, le=INT32_MAX)]
TokenId = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]
TopK = Annotated[StrictInt, Field(ge=-1, le=INT32_MAX)]
Seed = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]  # torch.Generator's range
StopStrings = Annotated[StrictStr | Annotated[list[StrictStr], Field(max_length=16)], UnicodeChecked]


class RequestBody(BaseModel):
    """The base of every request body: fields it does not know are ignored, not refused."""

    model_config = ConfigDict(extra="ignore")
