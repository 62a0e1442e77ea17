"""`tokenmill serve`: uvicorn with a drain phase on SIGTERM.

On the first SIGTERM/SIGINT the server stops admitting (ready -> 503, new requests -> 503) but keeps
serving what it has accepted, and exits 0 once nothing is in flight. If `shutdown_timeout` passes
first, every request still running is ended with a 503 error body (a final error event for a stream)
and the process exits a few seconds later, so the whole shutdown fits in the timeout plus
`ABANDON_GRACE_SECONDS` + `CLOSE_GRACE_SECONDS`. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from types import FrameType
from typing import NoReturn

import uvicorn

from tokenmill.config import ServerConfig
from tokenmill.server.app import create_app
from tokenmill.server.connections import header_timeout_protocol
from tokenmill.server.state import ServerState

logger = logging.getLogger(__name__)

ABANDON_GRACE_SECONDS = 2.0  # for the 503s of abandoned requests to reach their clients
CLOSE_GRACE_SECONDS = 2  # uvicorn's wait for connections to close, after which it cancels their tasks


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout
        self.drain_started: float | None = None
        self.abandoned_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_started is not None:
            logger.warning("signal %d again: exiting now", sig)
            self.should_exit = self.force_exit = True
            return
        self.drain_started = time.monotonic()
        self.state.lifecycle.draining = True
        logger.info(
            "signal %d: draining %d in-flight requests (up to %gs)",
            sig,
            self.state.admission.num_in_flight,
            self.drain_timeout,
        )

    async def on_tick(self, counter: int) -> bool:
        if self.drain_started is not None and not self.should_exit:
            now = time.monotonic()
            if self.state.admission.num_in_flight == 0:
                self.should_exit = True
            elif self.abandoned_at is None and now - self.drain_started >= self.drain_timeout:
                logger.warning(
                    "shutdown timeout (%gs) passed: ending %d requests with 503",
                    self.drain_timeout,
                    self.state.admission.num_in_flight,
                )
                self.abandoned_at = now
                await self.state.generation.abandon()
            elif self.abandoned_at is not None and now - self.abandoned_at >= ABANDON_GRACE_SECONDS:
                self.should_exit = True
        return await super().on_tick(counter)


def serve(config: ServerConfig) -> NoReturn:
    app = create_app(config)
    uvicorn_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        http=header_timeout_protocol(config.header_read_timeout),
        timeout_keep_alive=config.keep_alive_timeout,
        timeout_graceful_shutdown=CLOSE_GRACE_SECONDS,
    )
    DrainingServer(uvicorn_config, app.state.tm, config.shutdown_timeout).run()
    # A prompt worker may still be busy (a long tokenization, or an allowed request template that never
    # ends); the interpreter would join it at exit, so leave without waiting for it.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)
