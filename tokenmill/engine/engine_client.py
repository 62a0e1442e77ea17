"""What the server needs of an engine, whether one (`AsyncLLM`) or several replicas (`DataParallelLLM`).

`EngineClient` is that contract; the server is typed against it. `RequestStream` carries one
request's outputs from whichever thread receives them to the caller's event loop. `StreamingClient`
is the part both clients share: the life of one request's stream (refuse when dead or the id is
taken, register the stream, submit, relay the outputs, abort if the caller leaves early), with the
two steps that differ (where a request goes, what closing its stream undoes) left to each.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from tokenmill.engine.batch_stream import OutputStream, StreamItem, final_outputs
from tokenmill.engine.input_processor import Prompt
from tokenmill.engine.stats import EngineLoad
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.tokenizer import Tokenizer

if TYPE_CHECKING:
    from tokenmill.lora.manager import LoRAManager
    from tokenmill.models.config import ModelConfig
    from tokenmill.structured_output.manager import StructuredOutputs


class EngineDeadError(RuntimeError):
    """The engine stopped on an error; no request can be served any more."""


class ServedAdapters(Protocol):
    """The LoRA adapters an engine serves, by name (a `LoRAManager`, or what a replica reports)."""

    @property
    def adapters(self) -> Collection[str]: ...


class EngineFacts(Protocol):
    """What the server reads of the engine behind a client (its `engine` attribute)."""

    model_name: str
    device: torch.device
    model_config: ModelConfig
    max_model_len: int
    lora: LoRAManager | ServedAdapters | None  # None: LoRA off
    structured: StructuredOutputs  # compiles (and so checks) a request's constraint


class RequestStream:
    """One request's outputs on their way from an engine thread to the caller's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self.finished = False

    def accept(self, item: StreamItem) -> bool:
        return True  # every output goes to the caller

    def receive(self, item: StreamItem) -> None:
        self.queue.put_nowait(item)

    async def outputs(self) -> AsyncIterator[RequestOutput]:
        """The outputs up to the finished one; an exception put in the stream is raised here."""
        while not self.finished:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                self.finished = True
                raise item
            self.finished = item.finished
            yield item


def deliver(items: list[tuple[OutputStream, StreamItem]]) -> None:
    """Put items in their streams from any thread: one callback per event loop, not one per item, and
    none for a loop whose streams keep what they were given (see BatchStream)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[OutputStream, StreamItem]]] = {}
    for stream, item in items:
        if stream.accept(item):
            by_loop.setdefault(stream.loop, []).append((stream, item))
    for loop, pairs in by_loop.items():
        loop.call_soon_threadsafe(_receive_all, pairs)


def _receive_all(pairs: list[tuple[OutputStream, StreamItem]]) -> None:
    for stream, item in pairs:
        stream.receive(item)


@dataclass(frozen=True)
class Submission:
    """One request as a client hands it to its engine."""

    request_id: str
    prompt: Prompt
    params: SamplingParams
    final_only: bool
    lora: str | None = None


@dataclass(frozen=True)
class BatchRequest:
    """Requests a client's caller hands over together (`generate_batch`), all with the same parameters."""

    prompts: Sequence[Prompt]
    params: SamplingParams
    request_ids: Sequence[str]
    lora: str | None
    on_start: Callable[[], None] | None


class StreamingClient(ABC):
    """`generate` over a registry of streams (`_streams`, filled by the subclass's delivery side)."""

    _streams: dict[str, OutputStream]
    error: BaseException | None

    @property
    @abstractmethod
    def is_alive(self) -> bool: ...

    @abstractmethod
    def _submit(self, request: Submission) -> None:
        """Hand the request to the engine (its stream is registered already)."""

    @abstractmethod
    def _closed(self, request: Submission, finished: bool) -> None:
        """The caller is done with the stream; abort the request unless it `finished`."""

    async def generate(
        self,
        prompt: Prompt,
        params: SamplingParams,
        request_id: str,
        final_only: bool = False,
        lora: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Yield the request's outputs as they grow (with `final_only`, just the first, which says that
        generation has started, and the last); the last has `finished=True`. Leaving the loop early
        (or being cancelled, e.g. on a client disconnect) aborts the request. `lora` names a loaded
        LoRA adapter to run under."""
        if not self.is_alive:
            raise EngineDeadError(f"the engine has stopped: {self.error!r}")
        if request_id in self._streams:
            raise ValueError(f"request_id {request_id!r} is already in use")
        request = Submission(request_id, prompt, params, final_only, lora)
        stream = self._streams[request_id] = RequestStream()
        self._submit(request)
        try:
            async for output in stream.outputs():
                yield output
        finally:
            self._closed(request, stream.finished)
            self._streams.pop(request_id, None)

    async def generate_batch(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        request_ids: Sequence[str],
        lora: str | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> list[RequestOutput]:
        """The final outputs of many requests, in order (`on_start` runs at the batch's first output).
        Cancelling aborts the requests not finished; a request that admission refuses fails the batch
        with its ValueError (the others are aborted)."""
        if not self.is_alive:
            raise EngineDeadError(f"the engine has stopped: {self.error!r}")
        if len(prompts) != len(request_ids):
            raise ValueError(f"got {len(request_ids)} request ids for {len(prompts)} prompts")
        clash = next((request_id for request_id in request_ids if request_id in self._streams), None)
        if clash is not None:
            raise ValueError(f"request_id {clash!r} is already in use")
        return await self._batch(BatchRequest(prompts, params, request_ids, lora, on_start))

    async def _batch(self, batch: BatchRequest) -> list[RequestOutput]:
        """`generate_batch` after its checks. Here each request is submitted on its own; a client that
        can hand its engine a batch at once does so."""
        streams = [
            self.generate(prompt, batch.params, request_id, final_only=True, lora=batch.lora)
            for prompt, request_id in zip(batch.prompts, batch.request_ids)
        ]
        return await final_outputs(streams, batch.on_start)


class EngineClient(Protocol):
    engine: EngineFacts
    tokenizer: Tokenizer
    error: BaseException | None

    @property
    def is_alive(self) -> bool: ...

    def check(self, prompt: Prompt, params: SamplingParams) -> None:
        """Raise admission's ValueError now, on the caller's thread."""

    def loads(self) -> list[EngineLoad]:
        """One load per engine replica."""

    # One definition of the signatures: the clients' shared implementation's.
    generate = StreamingClient.generate
    generate_batch = StreamingClient.generate_batch

    async def abort(self, request_id: str) -> None: ...

    def shutdown(self, timeout: float = 10.0) -> None: ...
