"""Noticing that a client hung up while its non-streamed answer is still being generated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

logger = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client left; nobody reads it


class ClientDisconnected(Exception):
    """The client went away; the request was aborted and its blocks freed."""


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


async def log_disconnect(request: Request, _: Exception) -> Response:
    """An expected event, not a server error: one line, no traceback."""
    client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
    path = request.url.path
    logger.info("%s left before %s %s was answered; its generation was aborted", client, request.method, path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)
