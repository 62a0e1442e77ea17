"""Request bodies of every endpoint, strict so that a wrong type is a 400 and never a silent conversion.

Every string a request carries must be valid Unicode (JSON lets a body hold lone surrogates, which no
tokenizer can encode) and every integer must fit the engine's integer types, so that such input is a
400 naming the field rather than a failure deep in the tokenizer or in torch.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
)
from pydantic_core import PydanticCustomError

logger = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode (a lone surrogate, which UTF-8 cannot encode), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}"
    return None


def _require_unicode(value: Any) -> Any:
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


UnicodeChecked = BeforeValidator(_require_unicode)
Text = Annotated[StrictStr, UnicodeChecked]
Temperature = Annotated[float, Field(ge=0, le=100, strict=True)]
Probability = Annotated[float, Field(ge=0, le=1, strict=True)]
Penalty = Annotated[float, Field(ge=-2, le=2, strict=True)]
PositiveInt = Annotated[StrictInt, Field(ge=1, le=INT32_MAX)]
TokenId = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]
TopK = Annotated[StrictInt, Field(ge=-1, le=INT32_MAX)]
Seed = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]  # torch.Generator's range
StopStrings = Annotated[StrictStr | Annotated[list[StrictStr], Field(max_length=16)], UnicodeChecked]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _VllmSampling(_Body):
    """Sampling fields vLLM accepts beyond the OpenAI ones."""

    top_k: TopK | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10, strict=True)] | None = None
    min_tokens: Annotated[StrictInt, Field(ge=0, le=INT32_MAX)] = 0
    ignore_eos: StrictBool = False
    stop_token_ids: list[TokenId] | None = None
    skip_special_tokens: StrictBool = True


class StreamOptions(_Body):
    include_usage: StrictBool = False


class JsonSchemaFormat(_Body):
    """OpenAI's `response_format.json_schema`: the schema travels under `schema`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: Text
    description: Text | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputsBody(_Body):
    """vLLM's `structured_outputs` object; exactly one field is to be set (checked when it is used)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    json_: dict[str, Any] | Text | None = Field(default=None, alias="json")
    json_object: StrictBool | None = None
    regex: Text | None = None
    choice: Annotated[list[StrictStr], UnicodeChecked] | None = None
    grammar: Text | None = None


class _StructuredOutputFields(_Body):
    """Every spelling of an output constraint: OpenAI's `response_format`, vLLM's `structured_outputs`,
    and the older `guided_*` fields vLLM still accepts."""

    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsBody | None = None
    guided_json: dict[str, Any] | Text | None = None
    guided_regex: Text | None = None
    guided_choice: Annotated[list[StrictStr], UnicodeChecked] | None = None
    guided_grammar: Text | None = None


class _OpenAISampling(_VllmSampling, _StructuredOutputFields):
    model: Text | None = None
    n: Annotated[StrictInt, Field(ge=1, le=16)] = 1
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0, le=1, strict=True)] | None = None
    stop: StopStrings | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    seed: Seed | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None


class CompletionRequest(_OpenAISampling):
    prompt: Annotated[
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)],
        UnicodeChecked,
    ]
    max_tokens: PositiveInt | None = 16
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    echo: StrictBool = False
    suffix: Text | None = None
    best_of: PositiveInt | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: Text


class FunctionCall(_Body):
    name: Text
    arguments: Text  # a JSON object, as text (OpenAI's spelling)


class ToolCall(_Body):
    id: Text
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[StrictStr | list[TextPart], UnicodeChecked] | None = None
    name: Text | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: Text | None = None  # which call a tool message answers

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The conversation as chat templates take it; `developer` is OpenAI's newer name for `system`.
    Earlier tool calls carry their arguments as objects, which templates (Qwen's) render as JSON."""
    rendered = []
    for m in messages:
        message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": c.type, "function": {"name": c.function.name, "arguments": arguments}}
                for c in m.tool_calls
                for arguments in [_json_or_text(c.function.arguments)]
            ]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            message["name"] = m.name
        rendered.append(message)
    return rendered


def _json_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


class FunctionDefinition(_Body):
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    name: Text


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(_OpenAISampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool = True
    chat_template_kwargs: dict[str, Any] | None = None


class FastDeployRequest(_Body):
    """FastDeploy's request (seed 003): `text` or `messages`, with its own names for the sampling knobs.
    `model` names a LoRA adapter (or the base model) as on the OpenAI routes; FastDeploy's seed has no
    field of its own for it."""

    text: Text | None = None
    model: Text | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    req_id: Text | None = Field(default=None, min_length=1, max_length=256)
    max_dec_len: PositiveInt | None = None
    min_dec_len: PositiveInt = 1
    topp: Annotated[float, Field(gt=0, le=1, strict=True)] = 0.7
    temperature: Annotated[float, Field(gt=0, le=100, strict=True)] = 0.95
    penalty_score: Annotated[float, Field(gt=0, le=10, strict=True)] = 1.0
    frequency_score: Penalty = 0.0
    presence_score: Penalty = 0.0
    stream: StrictBool = False
    timeout: Annotated[float, Field(gt=0, le=3600, strict=True)] | None = None
    return_usage: StrictBool = False
    seed: Seed | None = None


FASTDEPLOY_ONLY_FIELDS = frozenset(
    {
        "text",
        "req_id",
        "max_dec_len",
        "min_dec_len",
        "topp",
        "penalty_score",
        "frequency_score",
        "presence_score",
        "return_usage",
        "timeout",
    }
)


def _chat_dialect(body: Any) -> str:
    if isinstance(body, dict) and FASTDEPLOY_ONLY_FIELDS & body.keys():
        return "fastdeploy"
    return "openai"


ChatBody = Annotated[
    Annotated[ChatCompletionRequest, Tag("openai")] | Annotated[FastDeployRequest, Tag("fastdeploy")],
    Discriminator(_chat_dialect),
]


class PredictRequest(_Body):
    """The judge's request: one prompt or a batch, plus optional overrides of the server's defaults.

    A single prompt that is not valid Unicode is a 400; in a batch such an item becomes "" (answered
    with "", like any empty question) so that the other items are still answered."""

    prompt: StrictStr | Annotated[list[StrictStr], Field(max_length=100_000)]
    max_new_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0, le=1, strict=True)] | None = None
    top_k: TopK | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10, strict=True)] | None = None
    stop: StopStrings | None = None
    system_prompt: Text | None = None
    lora: Text | None = None  # a LoRA adapter's name, or the base model's (default: --default-lora)

    @field_validator("prompt")
    @classmethod
    def _blank_invalid_batch_items(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, str):
            return _require_unicode(prompt)
        checked = []
        for index, question in enumerate(prompt):
            problem = unicode_problem(question)
            if problem:
                logger.warning(
                    "prompt[%d] is not valid Unicode text (%s); its answer is empty", index, problem
                )
            checked.append("" if problem else question)
        return checked


class TokenizeRequest(_Body):
    model: Text | None = None
    prompt: Text | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_special_tokens: StrictBool = True


class DetokenizeRequest(_Body):
    model: Text | None = None
    tokens: list[TokenId]


class LoadLoRAAdapterRequest(_Body):
    """POST /v1/load_lora_adapter: a PEFT adapter directory to serve under `lora_name`."""

    lora_name: Text
    lora_path: Text


class UnloadLoRAAdapterRequest(_Body):
    lora_name: Text
