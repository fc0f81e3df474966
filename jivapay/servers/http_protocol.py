"""The servers' HTTP/1.1 protocol: uvicorn's h11 protocol with deadlines for slow clients.

uvicorn closes idle keep-alive connections, but any byte a client sends cancels that timer, so a
client that trickles its headers or its body a byte at a time keeps a connection (and, for a body,
a request task) open for as long as it likes: 200 such connections stayed open in the hardening
run. Here every request must finish its headers within `HTTP_HEADER_TIMEOUT_SECONDS` of the
connection opening (or of the previous response, on a kept-alive connection), and its body within
`HTTP_BODY_TIMEOUT_SECONDS` of its headers; otherwise the connection is closed. A reverse proxy in
front should still enforce its own limits (README, Hardening).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

from jivapay.config import get_settings

logger = structlog.get_logger(__name__)


class DeadlineH11Protocol(H11Protocol):
    """H11Protocol that closes connections whose headers or body arrive too slowly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.HTTP_HEADER_TIMEOUT_SECONDS
        self.body_timeout = settings.HTTP_BODY_TIMEOUT_SECONDS
        self._deadline: asyncio.TimerHandle | None = None
        self._timed_cycle: object | None = None

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, phase: str) -> None:
        self._deadline = None
        waiting_for_headers = phase == "headers" and self.conn.their_state is h11.IDLE
        waiting_for_body = phase == "body" and self.conn.their_state is h11.SEND_BODY
        if (waiting_for_headers or waiting_for_body) and not self.transport.is_closing():
            logger.warning("slow_client_closed", phase=phase, client=self.client)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "headers")

    def handle_events(self) -> None:
        super().handle_events()
        # A new cycle means a request's headers are complete: its body has its own deadline.
        if self.cycle is not None and self.cycle is not self._timed_cycle:
            self._timed_cycle = self.cycle
            if self.conn.their_state is h11.SEND_BODY:
                self._arm(self.body_timeout, "body")
            else:
                self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            # The next request on this kept-alive connection gets the same header deadline.
            self._arm(self.header_timeout + self.timeout_keep_alive, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
