"""One path from engine outputs to an HTTP answer for every generating endpoint, whole or streamed.

The endpoints differ only in how they spell things, which a `Dialect` decides: what a stream opens
with, the events for one sequence's update, what closes it, the whole answer, and the framing (SSE
for OpenAI, JSON lines for FastDeploy). Which updates are sent, and when a sequence is done, is
decided here once for all of them.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.server.errors import APIError, error_body
from tokenmill.server.state import ServerState, Ticket, unless_disconnected


class Dialect(ABC):
    """How one API spells a generation. Sequences are numbered across the prompts of a request:
    `position * n + completion.index`, position being the prompt's place in the request."""

    media_type = "text/event-stream"

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def opening(self) -> Iterable[BaseModel]:
        return ()

    @abstractmethod
    def update(self, index: int, output: RequestOutput, completion: CompletionOutput) -> Iterable[BaseModel]:
        """Events for a sequence that has new text or just finished."""

    def closing(self, finals: list[RequestOutput]) -> Iterable[BaseModel]:
        return ()

    @abstractmethod
    def whole(self, outputs: list[RequestOutput]) -> BaseModel:
        """The non-streamed answer, from each prompt's final output in request order."""

    def frame(self, event: BaseModel) -> str:
        return f"data: {event.model_dump_json()}\n\n"

    def end(self) -> list[str]:
        return ["data: [DONE]\n\n"]

    def failure(self, exc: APIError) -> list[str]:
        """The last frames of a stream that failed after its headers were sent."""
        error = json.dumps(error_body(exc.status, exc.message, exc.param), ensure_ascii=False)
        return [f"data: {error}\n\n", *self.end()]


def json_response(body: BaseModel, status_code: int = 200) -> Response:
    return Response(body.model_dump_json(), status_code=status_code, media_type="application/json")


async def respond(
    request: Request,
    state: ServerState,
    dialect: Dialect,
    streams: list[AsyncIterator[RequestOutput]],
    ticket: Ticket,
    stream: bool,
) -> Response:
    """Streams the dialect's events, or answers whole once every prompt finished. The ticket is given
    back when the answer is complete or abandoned."""
    done = ticket.close

    if stream:
        return StreamingResponse(_framed(dialect, streams, done), media_type=dialect.media_type)
    try:
        outputs = await unless_disconnected(
            request, asyncio.gather(*(state.final_output(s) for s in streams))
        )
    finally:
        done()
    return json_response(dialect.whole(outputs))


async def _framed(
    dialect: Dialect, streams: list[AsyncIterator[RequestOutput]], done: Callable[[], None]
) -> AsyncIterator[str]:
    try:
        for event in dialect.opening():
            yield dialect.frame(event)
        finals: dict[int, RequestOutput] = {}
        finished: set[int] = set()
        async for position, output in _merged(streams):
            for completion in output.outputs:
                index = position * dialect.n + completion.index
                if index in finished or not (completion.delta_text or completion.finished):
                    continue
                if completion.finished:
                    finished.add(index)
                for event in dialect.update(index, output, completion):
                    yield dialect.frame(event)
            if output.finished:
                finals[position] = output
        for event in dialect.closing([finals[p] for p in sorted(finals)]):
            yield dialect.frame(event)
        for frame in dialect.end():
            yield frame
    except APIError as exc:
        for frame in dialect.failure(exc):
            yield frame
    finally:
        done()


async def _merged(streams: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several requests' updates as they come, tagged with the request's position."""
    queue: asyncio.Queue[tuple[int, RequestOutput] | BaseException | None] = asyncio.Queue()

    async def pump(position: int, stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for output in stream:
                await queue.put((position, output))
        except BaseException as exc:
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
