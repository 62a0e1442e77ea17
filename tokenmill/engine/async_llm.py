"""The asyncio client of the engine, for servers.

The engine runs its step loop on its own thread. Requests and aborts reach it through a queue that it
drains between steps; each step's outputs go back to the event loop in one callback. So the HTTP side
never waits on a model step and the step loop never waits on the HTTP side.

Failures are kept to the requests they belong to. Requests are validated at admission (input
processor), so request data cannot make a step fail in any known way; a request whose admission fails
unexpectedly gets the error alone. If a step raises anyway, the requests of that step (the batch, and
the step launched behind it) fail with `RequestFailedError` and the engine serves on: the cause is most
likely among their data, and aborting them leaves the scheduler and KV cache as if they had finished.
Counting such failures towards a shutdown would let a few crafted requests stop the server. The
engine stops (`EngineDeadError` for everyone) only when serving on cannot help: a device error (the
CUDA context is unusable after one), an error while recovering, running out of memory in
`MAX_CONSECUTIVE_OOM_STEPS` steps in a row (aborting the batch did not give the memory back), or any
failed step of a tensor-parallel engine (its ranks stopped at different collectives).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tokenmill.config import EngineConfig
from tokenmill.engine.batch_stream import BatchStream, OutputStream
from tokenmill.engine.engine_client import (
    BatchRequest,
    EngineDeadError,
    StreamingClient,
    Submission,
    deliver,
)
from tokenmill.engine.input_processor import Prompt
from tokenmill.engine.llm_engine import LLMEngine
from tokenmill.engine.stats import EngineLoad, engine_load
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


MAX_CONSECUTIVE_OOM_STEPS = 3


class RequestFailedError(RuntimeError):
    """The engine failed on this request (its admission or a step it was in); the engine serves on."""


@dataclass
class _AddBatch:
    """Requests admitted together, before the engine's next step."""

    adds: list[Submission]


@dataclass
class _Abort:
    request_id: str


@dataclass
class _Call:
    """A function to run on the engine thread between steps (e.g. registering a LoRA adapter)."""

    function: Callable[[LLMEngine], Any]
    loop: asyncio.AbstractEventLoop
    result: asyncio.Future


_STOP = object()


class AsyncLLM(StreamingClient):
    def __init__(
        self, config: EngineConfig, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        """`on_failure` is called from the engine thread once, if the step loop dies."""
        self.engine = LLMEngine(config)
        self._on_failure = on_failure
        self.tokenizer = self.engine.tokenizer
        self.error: BaseException | None = None
        self._oom_steps = 0  # consecutive
        self._inbox: queue.SimpleQueue[Submission | _AddBatch | _Abort | _Call | object] = queue.SimpleQueue()
        self._streams: dict[str, OutputStream] = {}
        self._stopping = False
        self._dying = threading.Lock()
        if self.engine.workers is not None:  # a dead worker may leave the step loop blocked: fail now
            self.engine.workers.started(on_death=self._die)
        self._thread = threading.Thread(target=self._run, name="tokenmill-engine", daemon=True)
        self._thread.start()

    @property
    def is_alive(self) -> bool:
        return self.error is None and self._thread.is_alive()

    def loads(self) -> list[EngineLoad]:
        """One load per engine replica (here, one), read from any thread: it may be a step old."""
        return [engine_load(self.engine)]

    def check(self, prompt: Prompt, params: SamplingParams) -> None:
        """Raise now, on the caller's thread, the ValueError admission would raise on the engine's: a
        server can then refuse a stream with a status before its headers are sent. Reads only the
        input processor's fixed limits, so it is safe from any thread."""
        self.engine.input_processor.process("", prompt, params)

    def _submit(self, request: Submission) -> None:
        self._inbox.put(request)

    def _closed(self, request: Submission, finished: bool) -> None:
        if not finished:
            self._inbox.put(_Abort(request.request_id))

    async def _batch(self, batch: BatchRequest) -> list[RequestOutput]:
        """Submitted as one: the engine admits them all before its next step (as `LLM.generate` does),
        and this event loop hears from the batch twice (`on_start` at its first output, then its end)
        rather than per request per step."""
        stream = BatchStream(batch.request_ids, batch.on_start)
        for request_id in batch.request_ids:
            self._streams[request_id] = stream
        adds = [
            Submission(request_id, prompt, batch.params, True, batch.lora)
            for request_id, prompt in zip(batch.request_ids, batch.prompts)
        ]
        self._inbox.put(_AddBatch(adds))
        try:
            return await stream.done
        finally:
            for request_id in stream.unfinished():
                self._inbox.put(_Abort(request_id))
            for request_id in batch.request_ids:
                self._streams.pop(request_id, None)

    async def call(self, function: Callable[[LLMEngine], Any]) -> Any:
        """Run `function(engine)` on the engine thread between steps; returns its result or raises its
        exception here."""
        if not self.is_alive:
            raise EngineDeadError(f"the engine has stopped: {self.error!r}")
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        self._inbox.put(_Call(function, loop, result))
        return await result

    async def abort(self, request_id: str) -> None:
        """Stop a request; its stream ends with finish_reason 'abort'."""
        self._inbox.put(_Abort(request_id))

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._inbox.put(_STOP)
        self._thread.join(timeout)
        self.engine.shutdown()

    # ---- engine thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._drain_inbox(block=not self.engine.has_unfinished_requests())
                if self.engine.has_unfinished_requests():
                    self._step()
        except BaseException as exc:
            logger.exception("engine step loop failed")
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        """Fail every request and report the failure, once (the step loop and a tensor-parallel
        worker's death may both get here)."""
        with self._dying:
            if self.error is not None:
                return
            self.error = exc
        dead = EngineDeadError(f"the engine has stopped: {exc!r}")
        for request_id in list(self._streams):
            self._send(request_id, dead)
        if self._on_failure is not None:
            self._on_failure(exc)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:
            out_of_memory = isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError))
            self._oom_steps = self._oom_steps + 1 if out_of_memory else 0
            if (
                _breaks_the_device(exc)
                or self._oom_steps >= MAX_CONSECUTIVE_OOM_STEPS
                or self.engine.workers is not None  # the ranks' collectives are out of step now
            ):
                raise
            logger.exception("a step failed; failing its requests and serving on")
            for request_id in self.engine.abort_failed_step():
                self._send(request_id, RequestFailedError(f"the engine failed on this request: {exc!r}"))
            return
        self._oom_steps = 0
        self._deliver(outputs)

    def _drain_inbox(self, block: bool) -> None:
        item = self._inbox.get() if block else self._next_nowait()
        while item is not None:
            if item is _STOP:
                return
            if isinstance(item, Submission):
                self._add(item)
            elif isinstance(item, _AddBatch):
                self._add_batch(item)
            elif isinstance(item, _Call):
                self._run_call(item)
            elif isinstance(item, _Abort):
                output = self.engine.abort_request(item.request_id)
                if output is not None:
                    self._deliver([output])
            item = self._next_nowait()

    def _add(self, add: Submission) -> bool:
        """Admit one request; on failure its stream gets the error (False)."""
        try:
            self.engine.add_request(
                add.request_id, add.prompt, add.params, stream=not add.final_only, lora_request=add.lora
            )
        except ValueError as exc:
            self._send(add.request_id, exc)
        except Exception as exc:
            logger.exception("admitting request %s failed", add.request_id)
            self._send(add.request_id, RequestFailedError(f"admitting the request failed: {exc!r}"))
        else:
            return True
        return False

    def _add_batch(self, batch: _AddBatch) -> None:
        """Admit a batch whole or not at all: one refused request aborts those admitted before it."""
        for index, add in enumerate(batch.adds):
            if not self._add(add):
                for admitted in batch.adds[:index]:
                    self.engine.abort_request(admitted.request_id)
                return

    def _run_call(self, call: _Call) -> None:
        try:
            value = call.function(self.engine)
        except Exception as exc:
            call.loop.call_soon_threadsafe(_settle, call.result, None, exc)
        else:
            call.loop.call_soon_threadsafe(_settle, call.result, value, None)

    def _next_nowait(self) -> Submission | _AddBatch | _Abort | _Call | object | None:
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        streams = self._streams  # read once per output: the event loop may remove a stream meanwhile
        deliver([(stream, o) for o in outputs if (stream := streams.get(o.request_id)) is not None])

    def _send(self, request_id: str, item: BaseException) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            deliver([(stream, item)])


def _breaks_the_device(exc: Exception) -> bool:
    """A CUDA error (illegal address, device-side assert, ...) leaves the context unusable. torch >= 2.8
    raises them as `torch.AcceleratorError`; older versions as a RuntimeError saying "CUDA error"."""
    return isinstance(exc, getattr(torch, "AcceleratorError", ())) or "CUDA error" in str(exc)


def _settle(future: asyncio.Future, value: Any, error: Exception | None) -> None:
    if future.done():  # the caller went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
