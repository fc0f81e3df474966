"""Input discipline before any route runs (pure ASGI): oversized bodies and NUL characters.

- A body larger than its cap is refused with 413 before it is read: at once when `Content-Length`
  says so, else as soon as the streamed bytes pass the cap (the route then sees a disconnect and
  nothing it sends goes out). Multipart bodies (receipts, evidence) get `MAX_MULTIPART_BODY_BYTES`,
  every other body `MAX_JSON_BODY_BYTES` (environment settings).
- A NUL character in the path or the query string is 422: PostgreSQL text cannot hold it. NULs in
  bodies are refused by the request models (`schemas.common.refuse_nul`), and any that still reaches
  the database is answered 422 by `database_data_error` instead of a 500.
"""

from __future__ import annotations

import re

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jivapay.config import get_settings
from jivapay.servers.exception_handlers import problem_response

log = structlog.get_logger(__name__)


def _problem(scope: Scope, status: int, code: str, title: str, detail: str) -> JSONResponse:
    state = scope.get("state") or {}
    return problem_response(
        status=status,
        code=code,
        title=title,
        detail=detail,
        instance=scope.get("path"),
        request_id=state.get("request_id"),
    )


# The only routes that take files (receipts, dispute evidence): every other route gets the JSON
# cap whatever Content-Type the client claims.
_FILE_ROUTES = re.compile(
    r"^/(?:gateway/payin/confirm/[^/]+|gateway/orders/[^/]+/dispute"
    r"|trader/orders/[^/]+/(?:confirm|dispute)|merchant/orders/[^/]+/dispute"
    r"|(?:support|admin)/orders/[^/]+/dispute)$"
)


def body_cap(headers: Headers, path: str = "") -> int:
    """The largest body accepted for a request with these headers to `path`."""
    settings = get_settings()
    if headers.get("content-type", "").lower().startswith("multipart/") and _FILE_ROUTES.match(
        path
    ):
        return settings.MAX_MULTIPART_BODY_BYTES
    return settings.MAX_JSON_BODY_BYTES


class InputGuardMiddleware:
    """Refuses oversized bodies (413) and NULs in the path or query (422) before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or b"\x00" in query or b"%00" in query:
            response = _problem(
                scope, 422, "validation_failed", "Validation failed", "NUL characters are refused"
            )
            await response(scope, receive, send)
            return

        headers = Headers(scope=scope)
        cap = body_cap(headers, scope.get("path", ""))
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            await self._too_large(scope, receive, send, cap)
            return

        received = 0
        refused = False

        async def capped_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    refused = True
                    await self._too_large(scope, receive, send, cap)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The route saw the disconnect we simulated; the 413 has already gone out.

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        log.warning("request_body_too_large", path=scope.get("path"), cap=cap)
        response = _problem(
            scope,
            413,
            "payload_too_large",
            "Payload too large",
            f"Request bodies of this kind are limited to {cap} bytes",
        )
        await response(scope, receive, send)


async def database_data_error(request: Request, exc: Exception) -> JSONResponse:
    """A value PostgreSQL refuses (NUL in text, a number out of range) is the client's: 422."""
    assert isinstance(exc, DBAPIError)
    log.warning("database_refused_value", path=request.url.path, error=type(exc.orig).__name__)
    return problem_response(
        status=422,
        code="validation_failed",
        title="Validation failed",
        detail="A value is not acceptable (NUL character or number out of range)",
        instance=request.url.path,
        request_id=getattr(request.state, "request_id", None),
    )
