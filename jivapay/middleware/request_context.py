"""Per-request context: request id, access log line and HTTP metrics (pure ASGI, no BaseHTTPMiddleware).

The request id comes from the caller's `X-Request-ID` when it is a sane token, else is generated; it
is bound with `structlog.contextvars` for the whole request (so every line any layer logs carries it),
stored in `scope["state"]` (`request.state.request_id`, used by the problem+json handlers) and
returned in the `X-Request-ID` response header. The app factory wraps the whole middleware stack
with this middleware, outside Starlette's error middleware, so even an unhandled error's 500 carries
the header and its log lines the id.

Access lines and metrics name the route template (`/gateway/payin/status/{order_id}`), never the raw
path: raw paths carry public order ids, which are capabilities, and would explode label cardinality.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jivapay.utils.metrics import HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ROUTE = "<unmatched>"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")

log = structlog.get_logger("jivapay.access")


def new_request_id() -> str:
    return uuid.uuid4().hex


def incoming_request_id(scope: Scope) -> str | None:
    """The caller's `X-Request-ID` if it is a sane token (<= 64 chars of [A-Za-z0-9._-])."""
    for key, value in scope.get("headers", ()):
        if key == _HEADER_KEY:
            try:
                candidate = value.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
                return None
            return candidate if _SANE_REQUEST_ID.fullmatch(candidate) else None
    return None


def _template_of(route: object) -> str | None:
    for attr in ("path_format", "path"):
        value = getattr(route, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def _find_template(routes: Iterable[Any], scope: Scope) -> str | None:
    for candidate in routes:
        # FastAPI >= 0.160 keeps included routers as branches; look at their effective routes.
        effective = getattr(candidate, "effective_route_contexts", None)
        if callable(effective):
            found = _find_template(effective(), scope)
            if found:
                return found
            continue
        try:
            match, _ = candidate.matches(scope)
        except Exception:  # noqa: S112 - a route that cannot judge this scope is skipped
            continue
        if match != Match.NONE:
            return _template_of(candidate)
    return None


def route_template(scope: Scope) -> str:
    """The path template (with include prefixes) of the route that served this request."""
    # FastAPI records the effective route (prefixes included) in its own scope namespace; the
    # APIRoute in scope["route"] only knows its own router's prefix.
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    template = _template_of(effective) or _template_of(scope.get("route"))
    if template:
        return template
    # Answered before routing (rate limit) or not found: look the template up without dispatching.
    router = getattr(scope.get("app"), "router", None)
    return _find_template(getattr(router, "routes", ()), scope) or UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Binds the request id, answers it in a header, logs one access line, records metrics."""

    def __init__(self, app: ASGIApp, *, server: str) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = incoming_request_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # what the client gets if the app dies before starting a response
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_request_id)
            finally:
                self._record(scope, status, time.perf_counter() - started, request_id)

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        method = scope.get("method", "")
        route = route_template(scope)
        HTTP_REQUESTS_TOTAL.labels(self.server, method, route, str(status)).inc()
        HTTP_REQUEST_DURATION_SECONDS.labels(self.server, method, route).observe(elapsed)
        emit = log.warning if status >= 500 else log.info
        emit(
            "http_request",
            server=self.server,
            method=method,
            path=route,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            request_id=request_id,
        )
