"""HTTP connections that cannot be held open for free.

uvicorn closes a keep-alive connection that stays idle after an answer (`timeout_keep_alive`), but
nothing limits how long a client may take to send a request's headers: a client that connects and
says nothing, or trickles a header a byte at a time (slowloris), holds its connection forever. This
protocol closes a connection whose next request's headers are not complete within the limit,
counted from the moment it connected or was last answered.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections whose request headers take over `seconds`."""

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._start_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _start_header_timer(self) -> None:
            self._stop_header_timer()
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            # h11 leaves IDLE only once a request's headers are complete
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.logger.info("closing a connection whose request headers took over %gs", seconds)
                self.transport.close()

    return HeaderTimeoutProtocol
