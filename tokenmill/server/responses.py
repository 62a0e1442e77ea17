"""Response bodies and stream events of every generating endpoint, in the OpenAI and FastDeploy shapes.

The shapes follow what the official `openai` client and FastDeploy callers parse. Some fields are sent
as `null` when empty (OpenAI's `finish_reason`, `logprobs`) while others are left out unless set (a
chunk's `usage` without `include_usage`, a delta's `role`): the latter are listed in `sent_when_set`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from tokenmill.outputs import RequestOutput


class _Response(BaseModel):
    sent_when_set: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_unset(self, handler: SerializerFunctionWrapHandler):
        # not annotated: pydantic would publish the annotation as the schema instead of the fields
        data = handler(self)
        for name in self.sent_when_set - self.model_fields_set:
            data.pop(name, None)
        return data


class UsageInfo(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, outputs: Iterable[RequestOutput]) -> UsageInfo:
        """Token counts of finished requests: each prompt once, every generated sequence."""
        prompt = completion = 0
        for output in outputs:
            prompt += len(output.prompt_token_ids)
            completion += sum(len(c.token_ids) for c in output.outputs)
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class _Head(_Response):
    id: str
    object: str
    created: int
    model: str


# ---- /v1/models, /tokenize, /detokenize, /version ----------------------------------------------------


class ModelCard(_Response):
    sent_when_set = frozenset({"parent"})

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tokenmill"
    parent: str | None = None  # a LoRA adapter's base model


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(_Response):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(_Response):
    prompt: str


class VersionResponse(_Response):
    version: str


# ---- /v1/completions ------------------------------------------------------------------------------


class CompletionLogprobs(_Response):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(_Response):
    """One sequence of a completion, whole or (in a stream) the text added since the last event."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None
    stop_reason: int | str | None


class CompletionResponse(_Head):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: UsageInfo


class CompletionChunk(_Head):
    sent_when_set = frozenset({"usage"})
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


# ---- /v1/chat/completions -------------------------------------------------------------------------


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(_Response):
    content: list[TokenLogprob]


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str | None
    stop_reason: int | str | None


class ChatCompletionResponse(_Head):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: UsageInfo


class Delta(_Response):
    sent_when_set = frozenset({"role", "content"})
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Response):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Head):
    sent_when_set = frozenset({"usage"})
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None


# ---- FastDeploy -----------------------------------------------------------------------------------


class FastDeployMessage(_Response):
    """A whole answer, a streamed line (`send_idx`, `token`) or an error (non-zero `error_code`).
    The last line of a stream also carries `tokens_all`, and `usage` when asked for."""

    sent_when_set = frozenset({"token", "send_idx", "tokens_all", "usage"})
    req_id: str | None
    token: str = ""
    is_end: int
    send_idx: int = 0
    tokens_all: str = ""
    error_code: int = 0
    error_msg: str = ""
    usage: UsageInfo | None = None
