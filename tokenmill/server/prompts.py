"""Prompts to token ids off the event loop, with the cost bounded before any work starts.

Tokenizing megabytes of text or rendering a chat template is CPU work that would stall every other
route (liveness included) if it ran on the event loop, so it runs on a small pool of worker threads.
Before that, cheap checks bound it: a text longer than the longest acceptable prompt could possibly be
in characters is refused (or, for the judge's `/predict`, cut) without being tokenized, and a chat
template supplied by the caller (code, which may loop without end) is refused unless the operator
allows it.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tokenmill.config import ServerConfig
from tokenmill.server.admission import Admission
from tokenmill.server.errors import APIError
from tokenmill.server.lifecycle import EngineLifecycle
from tokenmill.tokenizer import Tokenizer

T = TypeVar("T")

Messages = list[dict[str, Any]]


def question_messages(question: str, system: str | None) -> Messages:
    """The conversation a judge question becomes: the configured system prompt, then the question."""
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]


def longest_token_chars(tokenizer: Tokenizer) -> int:
    """An upper bound on the characters one token can stand for: its longest vocabulary entry (a
    byte-level entry spells each byte with one character, so never fewer than the text it decodes to)."""
    return max(len(piece) for piece in tokenizer.hf.get_vocab())


class PromptEncoder:
    def __init__(self, config: ServerConfig, lifecycle: EngineLifecycle, admission: Admission) -> None:
        self.config = config
        self.lifecycle = lifecycle
        self.admission = admission
        self._pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="tokenmill-prompts")
        self._chars_per_token: int | None = None

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Run blocking prompt work on the pool; the event loop stays free meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(work, *args))

    async def prepare(self) -> None:
        """Measure the tokenizer once, after loading (a pass over the vocabulary)."""
        self._chars_per_token = await self.run(longest_token_chars, self.tokenizer)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.lifecycle.running_engine().tokenizer

    @property
    def max_prompt_chars(self) -> int:
        """No text longer than this can fit in `max_prompt_tokens` tokens."""
        return self.admission.max_prompt_tokens * (self._chars_per_token or 1)

    def check_text_length(self, chars: int, param: str) -> None:
        if chars > self.max_prompt_chars:
            raise APIError(
                400,
                f"{param} is {chars} characters, more than any prompt of at most "
                f"{self.admission.max_prompt_tokens} tokens can be ({self.max_prompt_chars})",
                param,
            )

    # ---- on the event loop: check, then hand the work to the pool ----------------------------------

    async def encode(self, text: str, add_special_tokens: bool = True, param: str = "prompt") -> list[int]:
        self.check_text_length(len(text), param)
        return await self.run(self.encode_now, text, add_special_tokens)

    async def encode_many(self, texts: list[str], param: str = "prompt") -> list[list[int]]:
        for index, text in enumerate(texts):
            self.check_text_length(len(text), f"{param}[{index}]")
        return await self.run(self.encode_many_now, texts)

    async def encode_chat(
        self, messages: Messages, template_kwargs: dict[str, Any] | None = None
    ) -> list[int]:
        """Through the chat template, which the model must have (the OpenAI chat API's rule)."""
        self._check_conversation(messages, template_kwargs)
        return await self.run(self.render_now, self.tokenizer.encode_chat, messages, template_kwargs)

    async def encode_prompt(self, messages: Messages) -> list[int]:
        """Through the chat template, or the last message as plain text for a model without one (the
        judge contract and FastDeploy)."""
        self._check_conversation(messages, None)
        return await self.run(self.conversation_now, messages)

    def _check_conversation(self, messages: Messages, template_kwargs: dict[str, Any] | None) -> None:
        if (
            template_kwargs
            and "chat_template" in template_kwargs
            and not self.config.allow_request_chat_template
        ):
            raise APIError(
                400,
                "a chat template supplied with the request is refused (it is code this server would run); "
                "the operator may allow it with --allow-request-chat-template",
                "chat_template_kwargs.chat_template",
            )
        self.check_text_length(sum(len(m["content"]) for m in messages), "messages")

    # ---- blocking: on the pool's threads ------------------------------------------------------------

    def encode_now(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def encode_many_now(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.encode_many(texts)

    def conversation_now(self, messages: Messages) -> list[int]:
        return self.render_now(self.tokenizer.encode_prompt, messages, None)

    def conversations_now(self, conversations: list[Messages]) -> list[list[int]]:
        """`conversation_now` of each, with one template call and one tokenizer call for all."""
        return self.render_now(self.tokenizer.encode_prompts, conversations, None)

    def render_now(
        self,
        encode: Callable[..., T],
        messages: Messages | list[Messages],
        template_kwargs: dict[str, Any] | None,
    ) -> T:
        kwargs = {"enable_thinking": self.config.enable_thinking, **(template_kwargs or {})}
        try:
            return encode(messages, **kwargs)
        except ValueError as exc:
            raise APIError(400, str(exc), "messages") from exc
        except Exception as exc:  # a template may raise anything on a conversation it refuses
            raise APIError(400, f"the chat template rejected these messages: {exc}", "messages") from exc
