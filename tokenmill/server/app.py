"""The ASGI application. `create_app(config)` for code; `uvicorn tokenmill.server.app:app` reads the
configuration from the environment (TOKENMILL_* and the seeds' names)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

import tokenmill
from tokenmill.config import ServerConfig
from tokenmill.server import health, judge, lora_api, openai_api
from tokenmill.server.api_key import MISSING_KEY_MESSAGE, authorized
from tokenmill.server.disconnect import ClientDisconnected, log_disconnect
from tokenmill.server.errors import APIError, BodySizeLimit, install_error_handlers
from tokenmill.server.state import ServerState

logger = logging.getLogger(__name__)

ENGINE_FAILURE_EXIT_CODE = 1


def _api_key_guard(config: ServerConfig) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        if not authorized(request.headers.get("authorization"), config.api_key):
            raise APIError(401, MISSING_KEY_MESSAGE)

    return check


async def _exit_on_engine_failure(state: ServerState) -> None:
    """Exit the process when the engine dies, so Docker or Kubernetes restarts it; health shows 503 first."""
    await state.lifecycle.failed.wait()
    logger.critical(
        "engine failure (%r): exiting with code %d", state.lifecycle.error, ENGINE_FAILURE_EXIT_CODE
    )
    await asyncio.sleep(1.0)
    logging.shutdown()
    os._exit(ENGINE_FAILURE_EXIT_CODE)


async def _start_grpc(state: ServerState) -> Callable[[], Awaitable[None]]:
    """gRPC in this event loop, on this state; imported only here, so HTTP alone needs no grpcio."""
    from tokenmill.server.grpc import start_grpc_server

    return await start_grpc_server(state)


def create_app(config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    state = ServerState(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop_grpc = await _start_grpc(state) if config.grpc_port is not None else None
        loader = asyncio.create_task(state.start())
        watchdog = asyncio.create_task(_exit_on_engine_failure(state))
        try:
            yield
        finally:
            if stop_grpc is not None:
                await stop_grpc()
            loader.cancel()
            watchdog.cancel()
            state.shutdown()

    # With an API key the interactive docs and the schema close too: they describe every route and
    # are no one else's business. Without one they stay open, like the rest of the API.
    docs = {} if config.api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="tokenmill", version=tokenmill.__version__, lifespan=lifespan, **docs)
    app.state.tm = state
    install_error_handlers(app)
    app.add_exception_handler(ClientDisconnected, log_disconnect)
    guard = [Depends(_api_key_guard(config))]
    open_routes = guard if config.api_key_everywhere else []
    app.include_router(openai_api.router, dependencies=guard)
    if config.runtime_lora_updates:
        app.include_router(lora_api.router, dependencies=guard)
    app.include_router(judge.router, dependencies=open_routes)
    app.include_router(health.router, dependencies=open_routes)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    return app


def __getattr__(name: str) -> FastAPI:
    """`app` is built on first access, so importing this module has no side effects."""
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
