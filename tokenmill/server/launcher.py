"""`tokenmill serve`: uvicorn with a drain phase on SIGTERM.

On the first SIGTERM/SIGINT the server stops admitting (ready -> 503, new requests -> 503) but keeps
serving what it has accepted; it exits 0 once nothing is in flight or `shutdown_timeout` has passed.
A second signal exits at once.
"""

from __future__ import annotations

import logging
import time
from types import FrameType

import uvicorn

from tokenmill.config import ServerConfig
from tokenmill.server.app import create_app
from tokenmill.server.state import ServerState

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout
        self.drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_started is not None:
            super().handle_exit(sig, frame)
            return
        self.drain_started = time.monotonic()
        self.state.draining = True
        logger.info(
            "signal %d: draining %d in-flight requests (up to %.0fs)",
            sig,
            self.state.num_in_flight,
            self.drain_timeout,
        )

    async def on_tick(self, counter: int) -> bool:
        if self.drain_started is not None:
            drained = self.state.num_in_flight == 0
            if drained or time.monotonic() - self.drain_started > self.drain_timeout:
                self.should_exit = True
        return await super().on_tick(counter)


def serve(config: ServerConfig) -> int:
    app = create_app(config)
    uvicorn_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        timeout_graceful_shutdown=max(int(config.shutdown_timeout), 1),
    )
    DrainingServer(uvicorn_config, app.state.tm, config.shutdown_timeout).run()
    return 0
