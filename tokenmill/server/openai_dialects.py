"""The OpenAI spellings of a generation: text completions and chat completions, whole and streamed."""

from __future__ import annotations

from collections.abc import Iterable

from tokenmill.outputs import CompletionOutput, RequestOutput
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
    TokenLogprob,
    TopLogprob,
    UsageInfo,
)
from tokenmill.server.streaming import Dialect
from tokenmill.tokenizer import Tokenizer


class _OpenAIDialect(Dialect):
    """What both OpenAI dialects share: the response head, `usage` on request, logprob rendering."""

    chunk_type: type[CompletionChunk] | type[ChatCompletionChunk]

    def __init__(
        self,
        tokenizer: Tokenizer,
        request_id: str,
        created: int,
        model: str,
        n: int,
        logprobs: bool,
        include_usage: bool,
    ) -> None:
        super().__init__(n)
        self.tokenizer = tokenizer
        self.head = {"id": request_id, "created": created, "model": model}
        self.logprobs = logprobs
        # with include_usage, every chunk carries "usage": null until the last one (OpenAI's rule)
        self.chunk_usage = {"usage": None} if include_usage else {}

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)

    def new_entries(
        self, completion: CompletionOutput, streamed: bool
    ) -> tuple[list[int], list[dict[int, float]]]:
        """The tokens and logprob entries to report: all of them, or in a stream those of this update."""
        start = len(completion.token_ids) - len(completion.delta_token_ids) if streamed else 0
        entries = (completion.logprobs or [])[start:]
        return completion.token_ids[start : start + len(entries)], entries

    def chunk(self, **fields: object) -> CompletionChunk | ChatCompletionChunk:
        return self.chunk_type(**{**self.head, **self.chunk_usage, **fields})

    def closing(self, finals: list[RequestOutput]) -> Iterable[CompletionChunk | ChatCompletionChunk]:
        if self.chunk_usage:
            yield self.chunk(choices=[], usage=UsageInfo.of(finals))


class CompletionDialect(_OpenAIDialect):
    chunk_type = CompletionChunk

    def logprobs_of(self, completion: CompletionOutput, streamed: bool) -> CompletionLogprobs | None:
        if not (self.logprobs and completion.logprobs is not None):
            return None
        tokens, entries = self.new_entries(completion, streamed)
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
    chunk_type = ChatCompletionChunk

    def logprobs_of(self, completion: CompletionOutput, streamed: bool) -> ChatLogprobs | None:
        if not (self.logprobs and completion.logprobs is not None):
            return None
        tokens, entries = self.new_entries(completion, streamed)
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
        if completion.delta_text:
            logprobs = self.logprobs_of(completion, streamed=True)
            delta = Delta(content=completion.delta_text)
            yield self.chunk(choices=[ChatChunkChoice(index=index, delta=delta, logprobs=logprobs)])
        if completion.finished:
            finish = ChatChunkChoice(index=index, delta=Delta(), finish_reason=completion.finish_reason)
            yield self.chunk(choices=[finish])

    def whole(self, outputs: list[RequestOutput]) -> ChatCompletionResponse:
        choices = [
            ChatChoice(
                index=c.index,
                message=AssistantMessage(content=c.text),
                logprobs=self.logprobs_of(c, streamed=False),
                finish_reason=c.finish_reason,
                stop_reason=c.stop_reason,
            )
            for output in outputs
            for c in output.outputs
        ]
        return ChatCompletionResponse(**self.head, choices=choices, usage=UsageInfo.of(outputs))
