"""The server's side of the engine: lifecycle, admission, request limits, timeouts, disconnects, metrics.

Every endpoint goes through `ServerState.generate`, so limits and metrics hold the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request

from tokenmill.config import ServerConfig
from tokenmill.engine.async_llm import AsyncLLM, EngineDeadError, RequestFailedError
from tokenmill.eval.datasets import load_items
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.server.errors import APIError, bad_request_from_value_error
from tokenmill.server.metrics import Metrics, observe_finished
from tokenmill.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away; the request was aborted and its blocks freed."""


class Ticket:
    """A request's place in the admission queue, given back once its first token exists."""

    def __init__(self, state: ServerState) -> None:
        self._state: ServerState | None = state
        self._waiting = True
        state.num_waiting_requests += 1
        state.num_in_flight += 1

    def started(self) -> None:
        if self._waiting and self._state is not None:
            self._waiting = False
            self._state.num_waiting_requests -= 1

    def close(self) -> None:
        if self._state is not None:
            self.started()
            self._state.num_in_flight -= 1
            self._state = None

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine: AsyncLLM | None = None
        self.load_error: BaseException | None = None
        self.ready = asyncio.Event()
        self.loaded = asyncio.Event()
        self.draining = False
        self.num_waiting_requests = 0
        self.num_in_flight = 0
        self.started_at = time.time()
        self.metrics = Metrics(lambda: self.engine.engine if self.engine else None)

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model off the event loop (health endpoints keep answering), then warm it up."""
        try:
            self.engine = await asyncio.to_thread(AsyncLLM, self.config.engine_config())
            self.loaded.set()
            if self.config.warmup:
                await self._warmup()
        except BaseException as exc:
            self.load_error = exc
            self.loaded.set()
            raise
        self.ready.set()
        logger.info("ready: serving %s on %s:%d", self.model_name, self.config.host, self.config.port)

    async def _warmup(self) -> None:
        """Run the batch shape the judge will send before reporting ready: with `warmup_file`, its
        questions through the chat template, as many at once as `max_num_seqs` allows (else a few
        made-up questions, still through the template, so its first rendering is not a request's)."""
        started = time.perf_counter()
        params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
        if self.config.warmup_file:
            questions = [item.question for item in load_items(self.config.warmup_file)]
            count = min(self.config.max_num_seqs, self.config.warmup_prompts or self.config.max_num_seqs)
        else:
            questions = [f"Warm-up question {i}: what does a GPU kernel launch cost?" for i in range(8)]
            count = min(self.config.max_num_seqs, self.config.warmup_prompts or 8)
        limit = self._loaded_engine().engine.max_model_len - 1
        system = self.config.system_prompt
        prompts = [
            self.encode_prompt(question_messages(questions[i % len(questions)], system))[-limit:]
            for i in range(count)
        ]
        await asyncio.gather(
            *(self.final_output(self.generate(p, params, "warmup", stream=False)) for p in prompts)
        )
        logger.info("warm-up of %d requests took %.2fs", count, time.perf_counter() - started)
        # Start-up leaves millions of young objects (modules, model wrappers, compiled kernels): the first
        # batch's allocations would trigger a full collection that walks them all, a pause of 0.1-0.4 s.
        # Collect now and freeze the survivors, so no later collection walks them again.
        gc.collect()
        gc.freeze()

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    @property
    def alive(self) -> bool:
        return self.load_error is None and (self.engine is None or self.engine.is_alive)

    @property
    def is_ready(self) -> bool:
        return self.ready.is_set() and self.alive and not self.draining

    @property
    def model_name(self) -> str:
        if self.config.served_model_name:
            return self.config.served_model_name
        return self.engine.engine.model_name if self.engine else (self.config.model or "default")

    @property
    def vocab_size(self) -> int:
        return self._engine().engine.model_config.vocab_size

    @property
    def tokenizer(self) -> Tokenizer:
        return self._engine().tokenizer

    def _loaded_engine(self) -> AsyncLLM:
        """The engine once loaded (warm or not), unless the server drains or the engine died."""
        if self.draining:
            raise APIError(503, "the server is shutting down")
        if not self.alive:
            raise APIError(503, "the engine has stopped; the server is restarting")
        if self.engine is None:
            raise APIError(503, "the model is still loading")
        return self.engine

    def _engine(self) -> AsyncLLM:
        """The engine, for requests: loaded and warmed up."""
        engine = self._loaded_engine()
        if not self.ready.is_set():
            raise APIError(503, "the model is still loading")
        return engine

    # ---- limits -----------------------------------------------------------------------------------

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise APIError(
                404, f"model {model!r} does not exist; this server serves {self.model_name!r}", "model"
            )

    @property
    def max_prompt_tokens(self) -> int:
        limit = self._engine().engine.max_model_len - 1
        return min(limit, self.config.max_input_tokens) if self.config.max_input_tokens else limit

    def check_prompt_length(self, token_ids: list[int], param: str = "prompt") -> None:
        if len(token_ids) > self.max_prompt_tokens:
            raise APIError(
                400,
                f"{param} is {len(token_ids)} tokens; at most {self.max_prompt_tokens} are accepted",
                param,
            )

    def check_max_tokens(self, max_tokens: int | None, param: str = "max_tokens") -> None:
        limit = self.config.max_dec_len
        if max_tokens is not None and limit is not None and max_tokens > limit:
            raise APIError(400, f"{param} is {max_tokens}; at most {limit} (MAX_DEC_LEN) is allowed", param)

    def resolve_max_tokens(self, requested: int | None, prompt_len: int, param: str) -> int:
        """The request's output limit: what it asked for if that fits, else a 400 naming `param`;
        by default whatever room the context leaves, capped by MAX_DEC_LEN."""
        self.check_max_tokens(requested, param)
        room = self._engine().engine.max_model_len - prompt_len
        if requested is None:
            return min(room, self.config.max_dec_len or room)
        if requested > room:
            raise APIError(
                400,
                f"{param} is {requested} but the prompt ({prompt_len} tokens) leaves room for {room} "
                f"in this model's {prompt_len + room}-token context",
                param,
            )
        return requested

    def admit(self) -> Ticket:
        self._engine()
        if self.num_waiting_requests >= self.config.max_queued_requests:
            raise APIError(
                429,
                f"{self.num_waiting_requests} requests are already waiting "
                f"(limit {self.config.max_queued_requests}, MAX_CACHED_TASK_NUM); retry later",
            )
        return Ticket(self)

    @staticmethod
    def sampling_params(**fields: Any) -> SamplingParams:
        try:
            return SamplingParams(**{k: v for k, v in fields.items() if v is not None})
        except ValueError as exc:
            raise bad_request_from_value_error(exc) from exc

    # ---- prompts ----------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def encode_chat(
        self, messages: list[dict[str, str]], template_kwargs: dict[str, Any] | None = None
    ) -> list[int]:
        """Through the chat template, which the model must have (the OpenAI chat API's rule)."""
        return self._render(self.tokenizer.encode_chat, messages, template_kwargs)

    def encode_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Through the chat template, or the last message as plain text for a model without one (the
        judge contract and FastDeploy). Usable during warm-up."""
        return self._render(self._loaded_engine().tokenizer.encode_prompt, messages, None)

    def _render(
        self,
        encode: Callable[..., list[int]],
        messages: list[dict[str, str]],
        template_kwargs: dict[str, Any] | None,
    ) -> list[int]:
        kwargs = {"enable_thinking": self.config.enable_thinking, **(template_kwargs or {})}
        try:
            return encode(messages, **kwargs)
        except ValueError as exc:
            raise APIError(400, str(exc), "messages") from exc
        except Exception as exc:  # a template may raise anything on a conversation it refuses
            raise APIError(400, f"the chat template rejected these messages: {exc}", "messages") from exc

    # ---- generation -------------------------------------------------------------------------------

    async def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        prefix: str,
        ticket: Ticket | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        stream: bool = True,
    ) -> AsyncIterator[RequestOutput]:
        """One request's outputs (every update if `stream`, else only the last), with metrics, the
        timeout and abort-on-exit. Requests pass the readiness gate in `admit`; the warm-up runs before it."""
        engine = self._loaded_engine()
        request_id = request_id or f"{prefix}-{uuid.uuid4().hex}"
        timeout = timeout or self.config.request_timeout
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        outputs = engine.generate(prompt, params, request_id, final_only=not stream)
        finished = False
        try:
            while True:
                remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
                try:
                    output = await asyncio.wait_for(anext(outputs), remaining)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise APIError(
                        408, f"request timed out after {timeout:g}s and was aborted", "timeout"
                    ) from None
                except EngineDeadError as exc:
                    raise APIError(503, str(exc)) from exc
                except RequestFailedError as exc:
                    raise APIError(500, str(exc)) from exc
                except ValueError as exc:
                    raise bad_request_from_value_error(exc) from exc
                if ticket is not None:
                    ticket.started()
                if output.finished:
                    finished = True
                    observe_finished(self.metrics, output)
                yield output
                if output.finished:
                    return
        finally:
            await outputs.aclose()
            if not finished:  # the client left, timed out or failed: the engine aborted it
                self.metrics.request_success.labels("abort").inc(params.n)

    async def final_output(self, stream: AsyncIterator[RequestOutput]) -> RequestOutput:
        last = None
        async for output in stream:
            last = output
        assert last is not None
        return last


def question_messages(question: str, system: str | None) -> list[dict[str, str]]:
    """The conversation a judge question becomes: the configured system prompt, then the question."""
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so aborting its requests) if the client hangs up first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
