"""The servers' HTTP/1.1 protocol: uvicorn's httptools protocol with deadlines for slow clients and
a bound on a request's header block.

uvicorn closes idle keep-alive connections, but any byte a client sends cancels that timer, so a
client that trickles its headers or its body a byte at a time keeps a connection (and, for a body,
a request task) open for as long as it likes: 200 such connections stayed open in the hardening
run. Here every request must finish its headers within `HTTP_HEADER_TIMEOUT_SECONDS` of the
connection opening or, on a kept-alive connection, of the previous response (plus the keep-alive
timeout; a request pipelined behind one still being answered, of its own first byte), and its body
within `HTTP_BODY_TIMEOUT_SECONDS` of its headers; otherwise the connection is closed. Bytes that
start no request count too: httptools skips empty lines between requests, and each one would
otherwise cancel uvicorn's keep-alive timer. A header block still incomplete after
`MAX_HEADER_BYTES` is answered 400 and the connection closed (httptools itself buffers a header of
any size). A reverse proxy in front should still enforce its own limits (README, Hardening).

httptools (llhttp, the C parser of Node.js) rather than h11, whose parser runs in Python: served
with h11, a server spent 0.09-0.13 ms more CPU per small request (13-18% of a bare insert's; a
PayIn intake's difference was within the noise; docs/performance.md, "The servers' HTTP parser").
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jivapay.config import get_settings

logger = structlog.get_logger(__name__)

# A header block still incomplete beyond this many bytes is refused; the bytes of the read that
# completes it are not counted, so the effective bound is this plus one read.
MAX_HEADER_BYTES = 64 * 1024

Phase = Literal["headers", "body"]


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose headers or body arrive too slowly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.HTTP_HEADER_TIMEOUT_SECONDS
        self.body_timeout = settings.HTTP_BODY_TIMEOUT_SECONDS
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: Phase | None = None
        self._header_bytes = 0

    def _arm(self, seconds: float, phase: Phase) -> None:
        self._disarm()
        self._phase = phase
        self._header_bytes = 0
        self._deadline = self.loop.call_later(seconds, self._expire, phase)

    def _disarm(self) -> None:
        self._phase = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, phase: Phase) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.warning("slow_client_closed", phase=phase, client=self.client)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "headers")

    def data_received(self, data: bytes) -> None:
        if self._phase == "headers":
            self._header_bytes += len(data)
        super().data_received(data)
        if (
            self._phase == "headers"
            and self._header_bytes > MAX_HEADER_BYTES
            and not self.transport.is_closing()
        ):
            self._disarm()
            self.send_400_response("Request header block too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase is None:  # pipelined behind a request still being answered
            self._arm(self.header_timeout, "headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            self._disarm()  # the connection is handed to the WebSocket protocol
        else:
            # A request without a body completes in the same read and disarms this at once.
            self._arm(self.body_timeout, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        in_flight = self.cycle is not None and not self.cycle.response_complete
        if self._phase is None and not in_flight and not self.transport.is_closing():
            # The next request on this kept-alive connection gets the same header deadline.
            self._arm(self.header_timeout + self.timeout_keep_alive, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
