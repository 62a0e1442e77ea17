"""The engine's life as the server sees it: loading, readiness, draining on SIGTERM, failure.

Loading and engine failure are events, so whoever must react to them (the exit watchdog, `GET /` while
the model loads) awaits one instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from tokenmill.config import ServerConfig
from tokenmill.distributed.data_parallel import DataParallelLLM
from tokenmill.engine.async_llm import AsyncLLM
from tokenmill.engine.engine_client import EngineClient
from tokenmill.server.errors import APIError


class EngineLifecycle:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine: EngineClient | None = None
        self.load_error: BaseException | None = None
        self.loaded = asyncio.Event()  # loading ended, well or not
        self.ready = asyncio.Event()  # loaded and warmed up
        self.failed = asyncio.Event()  # loading failed or the engine thread died; never cleared
        self.draining = False  # SIGTERM: admit nothing new, finish what was admitted
        self.started_at = time.time()

    async def load(self) -> EngineClient:
        """Build the engine on a worker thread, so health endpoints keep answering meanwhile."""
        loop = asyncio.get_running_loop()

        def engine_died(_: BaseException) -> None:  # called on the engine thread
            with contextlib.suppress(RuntimeError):  # the loop may already be closed at exit
                loop.call_soon_threadsafe(self.failed.set)

        try:
            client: type[EngineClient] = DataParallelLLM if self.config.data_parallel_size > 1 else AsyncLLM
            self.engine = await asyncio.to_thread(client, self.config.engine_config(), engine_died)
        except Exception as exc:
            self.fail(exc)
            raise
        self.loaded.set()
        return self.engine

    def fail(self, error: BaseException) -> None:
        self.load_error = error
        self.loaded.set()
        self.failed.set()

    async def wait_ready_or_failed(self) -> None:
        waiters = {asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self.failed.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    @property
    def error(self) -> BaseException | None:
        return self.load_error or (self.engine.error if self.engine else None)

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

    def running_engine(self) -> EngineClient:
        """The engine once loaded and while it runs (warm-up and admitted requests use it while draining)."""
        if not self.alive:
            raise APIError(503, "the engine has stopped; the server is restarting")
        if self.engine is None:
            raise APIError(503, "the model is still loading")
        return self.engine

    def serving_engine(self) -> EngineClient:
        """The engine, for new requests: warm, and the server not draining."""
        if self.draining:
            raise APIError(503, "the server is shutting down")
        engine = self.running_engine()
        if not self.ready.is_set():
            raise APIError(503, "the model is still loading")
        return engine
