"""One request's generation as every endpoint runs it: timeout, abort on exit, errors, outcome metrics.

Request ids are unique where the streams are routed (`AsyncLLM.generate` refuses an id in use), so a
caller-chosen id (FastDeploy's `req_id`) that clashes is answered 400 like any other invalid request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

from tokenmill.config import ServerConfig
from tokenmill.engine.async_llm import EngineDeadError, RequestFailedError
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.server.admission import Ticket
from tokenmill.server.errors import APIError, bad_request_from_value_error
from tokenmill.server.lifecycle import EngineLifecycle
from tokenmill.server.metrics import Metrics, observe_all_finished, observe_finished

SHUTDOWN_MESSAGE = "the server shut down before this request finished (shutdown timeout passed)"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


ENGINE_ERRORS = (asyncio.TimeoutError, EngineDeadError, RequestFailedError, ValueError)


def api_error(exc: BaseException, timeout: float | None) -> tuple[str, APIError]:
    """One of `ENGINE_ERRORS` as the failure metric's label and the answer the client gets."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout", APIError(408, f"request timed out after {timeout:g}s and was aborted", "timeout")
    if isinstance(exc, EngineDeadError):
        return "engine_dead", APIError(503, str(exc))
    if isinstance(exc, RequestFailedError):
        return "engine_error", APIError(500, str(exc))
    assert isinstance(exc, ValueError), exc
    return "invalid", bad_request_from_value_error(exc)


class Generation:
    def __init__(self, config: ServerConfig, lifecycle: EngineLifecycle, metrics: Metrics) -> None:
        self.config = config
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.abandoned = False  # the drain timed out: whatever still runs is ended with a 503
        self._live: set[str] = set()

    async def abandon(self) -> None:
        """End every request still generating (each answers 503), and refuse any that would start."""
        self.abandoned = True
        if self.lifecycle.engine is not None:
            for request_id in list(self._live):
                await self.lifecycle.engine.abort(request_id)

    def refuse_early(self, prompts: list[list[int]], params: SamplingParams) -> None:
        """What the engine's admission would refuse, refused here before a ticket is taken or a
        stream's headers go out (a 400 naming the field)."""
        engine = self.lifecycle.running_engine()
        try:
            for prompt in prompts:
                engine.check(prompt, params)
        except ValueError as exc:
            self.metrics.request_failure.labels("invalid").inc()
            raise bad_request_from_value_error(exc) from exc

    async def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        prefix: str,
        ticket: Ticket | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        stream: bool = True,
        lora: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """One request's outputs (every update if `stream`, else only the last), with metrics, the
        timeout and abort-on-exit. Requests pass the readiness gate in `admit`; the warm-up runs before it."""
        if self.abandoned:
            raise APIError(503, SHUTDOWN_MESSAGE)
        engine = self.lifecycle.running_engine()
        request_id = request_id or new_id(prefix)
        timeout = timeout or self.config.request_timeout
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        outputs = engine.generate(prompt, params, request_id, final_only=not stream, lora=lora)
        failure: str | None = None
        finished = False
        registered = request_id not in self._live  # a clashing id is refused below; keep the first's
        self._live.add(request_id)
        try:
            while True:
                remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
                try:
                    output = await asyncio.wait_for(anext(outputs), remaining)
                except StopAsyncIteration:
                    return
                except ENGINE_ERRORS as exc:
                    failure, error = api_error(exc, timeout)
                    raise error from exc
                if ticket is not None:
                    ticket.started()
                if output.finished:
                    if self.abandoned and all(c.finish_reason == "abort" for c in output.outputs):
                        failure = "shutdown"
                        raise APIError(503, SHUTDOWN_MESSAGE)
                    finished = True
                    observe_finished(self.metrics, output)
                yield output
                if output.finished:
                    return
        finally:
            if registered:
                self._live.discard(request_id)
            await outputs.aclose()
            if failure is not None:
                self.metrics.request_failure.labels(failure).inc()
            elif not finished:  # the client went away: the engine aborted it
                self.metrics.request_success.labels("abort").inc(params.n)

    async def generate_batch(
        self,
        prompts: Sequence[list[int]],
        params: SamplingParams,
        prefix: str,
        ticket: Ticket | None = None,
        lora: str | None = None,
    ) -> list[RequestOutput]:
        """Many requests' final outputs, submitted to the engine as one batch, with `generate`'s
        metrics, timeout (for the whole batch) and abort-on-exit; any failure fails the batch."""
        if self.abandoned:
            raise APIError(503, SHUTDOWN_MESSAGE)
        engine = self.lifecycle.running_engine()
        request_ids = [new_id(prefix) for _ in prompts]
        timeout = self.config.request_timeout
        self._live.update(request_ids)
        failure: str | None = None
        outputs: list[RequestOutput] = []
        try:
            on_start = None if ticket is None else ticket.started
            batch = engine.generate_batch(prompts, params, request_ids, lora, on_start)
            outputs = await asyncio.wait_for(batch, timeout)
        except ENGINE_ERRORS as exc:
            failure, error = api_error(exc, timeout)
            raise error from exc
        finally:
            self._live.difference_update(request_ids)
            if failure is not None:
                self.metrics.request_failure.labels(failure).inc(len(prompts))
            elif not outputs:  # the client went away: the engine aborted them
                self.metrics.request_success.labels("abort").inc(params.n * len(prompts))
        ended = [self.abandoned and all(c.finish_reason == "abort" for c in o.outputs) for o in outputs]
        observe_all_finished(self.metrics, [output for output, end in zip(outputs, ended) if not end])
        if any(ended):  # by the shutdown timeout
            self.metrics.request_failure.labels("shutdown").inc(sum(ended))
            raise APIError(503, SHUTDOWN_MESSAGE)
        return outputs

    @staticmethod
    async def final_output(stream: AsyncIterator[RequestOutput]) -> RequestOutput:
        last = None
        async for output in stream:
            last = output
        assert last is not None
        return last
