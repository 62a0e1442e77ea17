"""The OpenAI spellings of a generation: text completions and chat completions, whole and streamed."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Iterable

from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.server.chat_output import ChoiceReader, MessageParts
from tokenmill.server.openai_requests import ChatCompletionRequest, CompletionRequest
from tokenmill.server.responses import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatLogprobs,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionResponse,
    Delta,
    FunctionCallOut,
    FunctionDelta,
    TokenLogprob,
    ToolCallChunk,
    ToolCallOut,
    TopLogprob,
    UsageInfo,
)
from tokenmill.server.state import new_id
from tokenmill.server.streaming import Dialect
from tokenmill.tokenizer import Tokenizer


class _OpenAIDialect(Dialect):
    """What both OpenAI dialects share: the response head, `usage` on request, logprob rendering."""

    chunk_type: type[CompletionChunk] | type[ChatCompletionChunk]
    id_prefix: str

    def __init__(
        self,
        tokenizer: Tokenizer,
        model: str,
        body: CompletionRequest | ChatCompletionRequest,
        logprobs: bool,
    ) -> None:
        super().__init__(body.n)
        self.tokenizer = tokenizer
        self.head = {"id": new_id(self.id_prefix), "created": int(time.time()), "model": model}
        self.logprobs = logprobs
        # with include_usage, every chunk carries "usage": null until the last one (OpenAI's rule)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        self.chunk_usage = {"usage": None} if include_usage else {}

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)

    def logprobs_of(
        self, completion: CompletionOutput, streamed: bool
    ) -> CompletionLogprobs | ChatLogprobs | None:
        """Logprobs of all the sequence's tokens, or in a stream of those this update added."""
        if not (self.logprobs and completion.logprobs is not None):
            return None
        start = len(completion.token_ids) - len(completion.delta_token_ids) if streamed else 0
        entries = completion.logprobs[start:]
        return self.spell_logprobs(completion.token_ids[start : start + len(entries)], entries)

    @abstractmethod
    def spell_logprobs(
        self, tokens: list[int], entries: list[dict[int, float]]
    ) -> CompletionLogprobs | ChatLogprobs:
        """Each token's logprob and its top alternatives (`entries[i]` holds `tokens[i]` too)."""

    def chunk(self, **fields: object) -> CompletionChunk | ChatCompletionChunk:
        return self.chunk_type(**{**self.head, **self.chunk_usage, **fields})

    def closing(self, finals: list[RequestOutput]) -> Iterable[CompletionChunk | ChatCompletionChunk]:
        if self.chunk_usage:
            yield self.chunk(choices=[], usage=UsageInfo.of(finals))


class CompletionDialect(_OpenAIDialect):
    chunk_type = CompletionChunk
    id_prefix = "cmpl"

    def spell_logprobs(self, tokens: list[int], entries: list[dict[int, float]]) -> CompletionLogprobs:
        return CompletionLogprobs(
            tokens=[self.token_text(t) for t in tokens],
            token_logprobs=[entry[t] for t, entry in zip(tokens, entries)],
            top_logprobs=[{self.token_text(k): v for k, v in entry.items()} for entry in entries],
            text_offset=[],
        )

    def choice(self, index: int, completion: CompletionOutput, streamed: bool) -> CompletionChoice:
        return CompletionChoice(
            index=index,
            text=completion.delta_text if streamed else completion.text,
            logprobs=self.logprobs_of(completion, streamed),
            finish_reason=completion.finish_reason,
            stop_reason=completion.stop_reason,
        )

    def update(
        self, index: int, output: RequestOutput, completion: CompletionOutput
    ) -> Iterable[CompletionChunk]:
        yield self.chunk(choices=[self.choice(index, completion, streamed=True)])

    def whole(self, outputs: list[RequestOutput]) -> CompletionResponse:
        choices = [
            self.choice(position * self.n + c.index, c, streamed=False)
            for position, output in enumerate(outputs)
            for c in output.outputs
        ]
        return CompletionResponse(**self.head, choices=choices, usage=UsageInfo.of(outputs))


class ChatDialect(_OpenAIDialect):
    """Chat answers, read by a `ChoiceReader` per choice: reasoning, content and tool calls."""

    chunk_type = ChatCompletionChunk
    id_prefix = "chatcmpl"

    def __init__(
        self,
        tokenizer: Tokenizer,
        model: str,
        body: ChatCompletionRequest,
        logprobs: bool,
        new_reader: Callable[[], ChoiceReader] = lambda: ChoiceReader(None, None),
    ) -> None:
        super().__init__(tokenizer, model, body, logprobs)
        self.new_reader = new_reader
        self._readers: dict[int, ChoiceReader] = {}

    def spell_logprobs(self, tokens: list[int], entries: list[dict[int, float]]) -> ChatLogprobs:
        return ChatLogprobs(
            content=[
                TokenLogprob(
                    **self.spelled(token, entry[token]),
                    top_logprobs=[
                        TopLogprob(**self.spelled(k, v))
                        for k, v in sorted(entry.items(), key=lambda kv: -kv[1])
                    ],
                )
                for token, entry in zip(tokens, entries)
            ]
        )

    def spelled(self, token: int, logprob: float) -> dict[str, object]:
        text = self.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    def opening(self) -> Iterable[ChatCompletionChunk]:
        for index in range(self.n):
            yield self.chunk(
                choices=[ChatChunkChoice(index=index, delta=Delta(role="assistant", content=""))]
            )

    def update(
        self, index: int, output: RequestOutput, completion: CompletionOutput
    ) -> Iterable[ChatCompletionChunk]:
        reader = self._readers.setdefault(index, self.new_reader())
        parts = reader.feed(completion.delta_text)
        if completion.finished:
            parts += reader.finish()
        if parts:
            logprobs = self.logprobs_of(completion, streamed=True)
            delta = _delta(parts)
            yield self.chunk(choices=[ChatChunkChoice(index=index, delta=delta, logprobs=logprobs)])
        if completion.finished:
            reason = _finish_reason(reader, completion)
            yield self.chunk(choices=[ChatChunkChoice(index=index, delta=Delta(), finish_reason=reason)])

    def whole(self, outputs: list[RequestOutput]) -> ChatCompletionResponse:
        choices = []
        for output in outputs:
            for c in output.outputs:
                reader = self.new_reader()
                parts = reader.read_whole(c.text)
                choices.append(
                    ChatChoice(
                        index=c.index,
                        message=_message(parts, reader),
                        logprobs=self.logprobs_of(c, streamed=False),
                        finish_reason=_finish_reason(reader, c),
                        stop_reason=c.stop_reason,
                    )
                )
        return ChatCompletionResponse(**self.head, choices=choices, usage=UsageInfo.of(outputs))


def _finish_reason(reader: ChoiceReader, completion: CompletionOutput) -> str | None:
    return "tool_calls" if reader.called and completion.finish_reason == "stop" else completion.finish_reason


def _delta(parts: MessageParts) -> Delta:
    fields: dict[str, object] = {}
    if parts.content:
        fields["content"] = parts.content
    if parts.reasoning:
        fields["reasoning_content"] = fields["reasoning"] = parts.reasoning
    if parts.tool_calls:
        fields["tool_calls"] = [
            ToolCallChunk(
                index=call.index,
                id=call.id,
                type="function",
                function=FunctionDelta(name=call.name, arguments=call.arguments),
            )
            if call.id
            else ToolCallChunk(index=call.index, function=FunctionDelta(arguments=call.arguments))
            for call in parts.tool_calls
        ]
    return Delta(**fields)


def _message(parts: MessageParts, reader: ChoiceReader) -> AssistantMessage:
    """The whole message: tool call pieces joined per call; content null when only tools were called."""
    calls: dict[int, ToolCallOut] = {}
    for piece in parts.tool_calls:
        if piece.id is not None:
            function = FunctionCallOut(name=piece.name or "", arguments="")
            calls[piece.index] = ToolCallOut(id=piece.id, function=function)
        calls[piece.index].function.arguments += piece.arguments
    fields: dict[str, object] = {"content": parts.content or (None if calls else "")}
    if reader.reasons:
        fields["reasoning_content"] = fields["reasoning"] = parts.reasoning or None
    if calls:
        fields["tool_calls"] = list(calls.values())
    return AssistantMessage(**fields)
