"""Where a batch of requests submitted together gathers its final outputs.

A `RequestStream` hands every output it is given to its event loop, which wakes the caller's task: for
a 358-item batch that is hundreds of task wake-ups per step spent on outputs nobody streams. A
`BatchStream` keeps its requests' final outputs on the thread that produces them (the engine's) and
wakes its event loop twice: when the batch's first output exists (generation has started) and when the
last request finishes (or one fails, which ends the batch).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from tokenmill.outputs import RequestOutput

StreamItem = RequestOutput | BaseException


class OutputStream(Protocol):
    """What the engine side delivers to: `accept` on the producing thread says whether the item must
    reach `receive`, which runs on `loop`."""

    loop: asyncio.AbstractEventLoop

    def accept(self, item: StreamItem) -> bool: ...

    def receive(self, item: StreamItem) -> None: ...


class BatchStream:
    def __init__(self, request_ids: Sequence[str], on_start: Callable[[], None] | None = None) -> None:
        """`on_start` runs on the caller's event loop when the batch's first output exists."""
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[list[RequestOutput]] = self.loop.create_future()
        self._on_start = on_start
        self._position = {request_id: index for index, request_id in enumerate(request_ids)}
        if len(self._position) != len(request_ids):
            raise ValueError("request ids of a batch must differ")
        self._outputs: list[RequestOutput | None] = [None] * len(request_ids)
        self._remaining = len(request_ids)
        self._heard = False
        self._settled = False  # every request finished, or one failed: later items are dropped
        self._lock = threading.Lock()  # a dying engine may fail the batch from another thread

    def accept(self, item: StreamItem) -> bool:
        """On the producing thread: keep a final output; True for what the event loop must hear of
        (the batch's first output, its last one, an error)."""
        with self._lock:
            if self._settled:
                return False
            if isinstance(item, BaseException):
                self._settled = True
                return True
            first, self._heard = not self._heard, True
            if item.finished:
                index = self._position[item.request_id]
                if self._outputs[index] is None:
                    self._outputs[index] = item
                    self._remaining -= 1
                if self._remaining == 0:
                    self._settled = True
                    return True
            return first

    def receive(self, item: StreamItem) -> None:
        """On the event loop: settle `done` with the outputs in submission order, or the error."""
        if self._on_start is not None:
            self._on_start()
            self._on_start = None
        if self.done.done():
            return
        if isinstance(item, BaseException):
            self.done.set_exception(item)
            return
        with self._lock:
            if self._remaining == 0:
                self.done.set_result([output for output in self._outputs if output is not None])

    def unfinished(self) -> list[str]:
        """The requests whose final output has not arrived (to abort when the caller leaves)."""
        with self._lock:
            return [rid for rid, index in self._position.items() if self._outputs[index] is None]


async def final_outputs(
    streams: Sequence[AsyncIterator[RequestOutput]], on_start: Callable[[], None] | None = None
) -> list[RequestOutput]:
    """A batch as separate requests' streams, for an engine client that cannot submit one: each
    stream's last output, in order. If one fails, the others are cancelled (which aborts them)."""

    async def last(stream: AsyncIterator[RequestOutput]) -> RequestOutput:
        last_output = None
        async for output in stream:
            last_output = output
            if on_start is not None:
                on_start()
        assert last_output is not None, "a request's stream ends with its final output"
        return last_output

    tasks = [asyncio.ensure_future(last(stream)) for stream in streams]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
