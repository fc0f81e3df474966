"""Render every error as RFC 9457 `application/problem+json`.

`register_exception_handlers(app)` is called by the app factory, so endpoints never need try/except.
Domain errors keep their message (a 5xx answers a generic one and logs the message); request validation errors list the offending fields; a
database that is down, restarting or out of pooled connections is a 503 `database_error` with
`Retry-After`; anything unexpected is logged, reported, and answered with a bare 500 that leaks
nothing.
"""

from __future__ import annotations

from typing import Any

import anyio
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from jivapay.database.utils import database_unavailable
from jivapay.utils.exceptions import DatabaseError, JivaPayException, RateLimited
from jivapay.utils.notifications import report_critical_error

PROBLEM_JSON = "application/problem+json"
# A tag URI (RFC 4151), which RFC 9457 allows: it names the problem and points at no web page, so
# no client follows it to a domain the project does not control. `code` holds the same name.
PROBLEM_TYPE_BASE = "tag:jivapay,2026:problem:"
# A body with 100k unknown fields must not answer a 10 MB error: the first ones and the count.
MAX_REPORTED_ERRORS = 20

log = structlog.get_logger(__name__)

_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("authentication_failed", "Authentication failed"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_failed", "Validation failed"),
    429: ("rate_limited", "Too many requests"),
}


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build one problem+json response; the single place its shape is defined."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


# What a client reads for a 5xx: the code says which failure it was, the message stays in the logs.
_GENERIC_5XX = {
    503: "The service is temporarily unavailable. Retry later.",
}
_GENERIC_5XX_DEFAULT = "An internal error occurred. It has been logged."
# A restart or failover of PostgreSQL takes seconds: when a client should try again.
DATABASE_RETRY_AFTER_SECONDS = 1


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JivaPayException)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status_code == 401 and not getattr(request.state, "authenticates_store", False):
        headers["WWW-Authenticate"] = "Bearer"  # not for store HMAC signatures: no such scheme
    detail = exc.message
    public_extra = {k: v for k, v in exc.extra.items() if k != "internal"}
    if exc.status_code >= 500:
        # The message may name internal ids or state ("store 12 has no commission row"): it goes
        # to the log and Sentry only; the client gets the code and a generic sentence.
        log.error("domain_error", code=exc.code, error=exc.message, path=request.url.path)
        report_critical_error(exc, "domain error answered with 5xx", path=request.url.path)
        detail = _GENERIC_5XX.get(exc.status_code, _GENERIC_5XX_DEFAULT)
        public_extra = {}
    return problem_response(
        status=exc.status_code,
        code=exc.code,
        title=exc.title,
        detail=detail,
        instance=request.url.path,
        headers=headers or None,
        request_id=_request_id(request),
        **public_extra,
    )


async def _unverified_store_request_refused(request: Request) -> JSONResponse | None:
    """The 429 due to an anonymous caller whose request to a store route failed before its
    signature was checked, or None when it is within its limit."""
    # The limiter answers with this module's problem responses: imported here, not at the top.
    from jivapay.middleware.rate_limiting import store_route_unverified

    try:
        await anyio.to_thread.run_sync(store_route_unverified, request)
    except RateLimited as exc:
        return await _domain_error(request, exc)
    return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = await _unverified_store_request_refused(request)
    if refused is not None:
        return refused
    errors = [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()[:MAX_REPORTED_ERRORS]
    ]
    total = len(exc.errors())
    fields = ", ".join(".".join(e["loc"]) for e in errors)
    more = f" (and {total - len(errors)} more)" if total > len(errors) else ""
    return problem_response(
        status=422,
        code="validation_failed",
        title="Validation failed",
        detail=f"Invalid request: {fields}{more}" if fields else "Invalid request",
        instance=request.url.path,
        errors=errors,
        error_count=total,
        request_id=_request_id(request),
    )


# FastAPI's answer to a body it cannot read as JSON or a form (not UTF-8, say): 400. Malformed JSON
# is 422 `validation_failed`, and so is this one, so every unreadable body answers the same.
_UNREADABLE_BODY = "There was an error parsing the body"


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (a route answers 405 naming only its own)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
        refused = await _unverified_store_request_refused(request)
        if refused is not None:
            return refused
        error = {
            "loc": ["body"],
            "msg": "the body is not valid UTF-8 JSON or form data",
            "type": "body_invalid",
        }
        return problem_response(
            status=422,
            code="validation_failed",
            title="Validation failed",
            detail="Invalid request: body",
            instance=request.url.path,
            errors=[error],
            error_count=1,
            request_id=_request_id(request),
        )
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(
        status=exc.status_code,
        code=code,
        title=title,
        detail=detail,
        instance=request.url.path,
        headers=headers or None,
        request_id=_request_id(request),
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled_error", path=request.url.path, error_type=type(exc).__name__)
    report_critical_error(exc, "unhandled error in request", path=request.url.path)
    return problem_response(
        status=500,
        code="internal_error",
        title="Internal error",
        detail="An unexpected error occurred. It has been logged.",
        instance=request.url.path,
        request_id=_request_id(request),
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database is down, restarting or out of pooled connections: a 503 the client may retry
    (nothing was committed), logged as a warning; any other database error is a bug's 500."""
    if not database_unavailable(exc):
        return await _unexpected_error(request, exc)
    log.warning("database_unavailable", path=request.url.path, error_type=type(exc).__name__)
    error = DatabaseError("database unavailable")
    return problem_response(
        status=error.status_code,
        code=error.code,
        title=error.title,
        detail=_GENERIC_5XX[503],
        instance=request.url.path,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        request_id=_request_id(request),
    )


def register_exception_handlers(app: FastAPI) -> None:
    """Install the problem+json handlers on `app`."""
    app.add_exception_handler(JivaPayException, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(SQLAlchemyTimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
