"""Request bodies of the OpenAI-compatible routes, with the fields and endpoints vLLM adds to them.

Completions and chat (messages, tools, output constraints, vLLM's extra sampling fields), tokenize and
detokenize, and loading or unloading a LoRA adapter. They hold the most fields and change with OpenAI's
and vLLM's APIs, apart from the FastDeploy and judge bodies, which change with their own contracts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr

from tokenmill.server.request_fields import (
    INT32_MAX,
    Penalty,
    PositiveInt,
    Probability,
    RequestBody,
    Seed,
    StopStrings,
    Temperature,
    Text,
    TokenId,
    TopK,
    UnicodeChecked,
)


class _VllmSampling(RequestBody):
    """Sampling fields vLLM accepts beyond the OpenAI ones."""

    top_k: TopK | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10, strict=True)] | None = None
    min_tokens: Annotated[StrictInt, Field(ge=0, le=INT32_MAX)] = 0
    ignore_eos: StrictBool = False
    stop_token_ids: list[TokenId] | None = None
    skip_special_tokens: StrictBool = True


class StreamOptions(RequestBody):
    include_usage: StrictBool = False


class JsonSchemaFormat(RequestBody):
    """OpenAI's `response_format.json_schema`: the schema travels under `schema`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: Text
    description: Text | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(RequestBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputsBody(RequestBody):
    """vLLM's `structured_outputs` object; exactly one field is to be set (checked when it is used)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    json_: dict[str, Any] | Text | None = Field(default=None, alias="json")
    json_object: StrictBool | None = None
    regex: Text | None = None
    choice: Annotated[list[StrictStr], UnicodeChecked] | None = None
    grammar: Text | None = None


class _StructuredOutputFields(RequestBody):
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
    logit_bias: dict[StrictStr, float] | None = None  # refused unless empty: the sampler has no biases


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


class TextPart(RequestBody):
    type: Literal["text"]
    text: Text


class FunctionCall(RequestBody):
    name: Text
    arguments: Text  # a JSON object, as text (OpenAI's spelling)


class ToolCall(RequestBody):
    id: Text
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(RequestBody):
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
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's stack: as sent
        return arguments


class FunctionDefinition(RequestBody):
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(RequestBody):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(RequestBody):
    name: Text


class NamedToolChoice(RequestBody):
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
    functions: list[Any] | None = None  # OpenAI's deprecated spelling of tools: refused, naming tools
    function_call: Any = None
    chat_template_kwargs: ChatTemplateKwargs | None = None


# Arguments the server's own chat template call sets: passed again, they clash (a TypeError inside
# transformers, blamed on the messages) or silently replace the request's `tools`.
SERVER_TEMPLATE_ARGUMENTS = frozenset(
    {
        "conversation", "messages", "tools", "tokenize", "add_generation_prompt", "continue_final_message",
        "return_dict", "return_tensors", "return_assistant_tokens_mask", "tokenizer_kwargs", "padding",
        "truncation", "max_length",
    }
)  # fmt: skip


class ChatTemplateKwargs(RequestBody):
    """`chat_template_kwargs`: handed to the chat template as they are (but none of
    `SERVER_TEMPLATE_ARGUMENTS`, refused where the request is read); `enable_thinking` is a boolean,
    since the server reads it too."""

    model_config = ConfigDict(extra="allow")
    enable_thinking: StrictBool | None = None
    chat_template: Text | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude_none=True)


class TokenizeRequest(RequestBody):
    model: Text | None = None
    prompt: Text | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_special_tokens: StrictBool = True


class DetokenizeRequest(RequestBody):
    model: Text | None = None
    tokens: list[TokenId]


class LoadLoRAAdapterRequest(RequestBody):
    """POST /v1/load_lora_adapter: a PEFT adapter directory to serve under `lora_name`."""

    lora_name: Text
    lora_path: Text


class UnloadLoRAAdapterRequest(RequestBody):
    lora_name: Text
