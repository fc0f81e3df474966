"""Liveness, readiness and metrics endpoints shared by every server (no auth, no rate limit).

`GET /health` answers as long as the process serves HTTP. `GET /ready` checks the dependencies a
request needs (PostgreSQL `SELECT 1`, Redis `PING`, and the rate limiter's storage running the
operations the limiter uses, or having failed in the last 30 s), each bounded by a short timeout so a probe never
hangs, and answers 503 problem+json naming what failed. `GET /metrics` is the Prometheus text format.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.config import get_settings
from jivapay.servers.exception_handlers import problem_response
from jivapay.utils.metrics import render_latest

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
REDIS_TIMEOUT_SECONDS = 0.5

_redis_lock = threading.Lock()
_redis_clients: dict[str, Any] = {}


def _check_database() -> None:
    from jivapay.database.utils import read_session

    with read_session() as session:
        session.execute(text("SELECT 1"))


def _redis_client(url: str) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = _redis_clients[url] = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),
            )
        return client


def _check_redis() -> None:
    url = get_settings().REDIS_URL
    if not url:
        raise RuntimeError("REDIS_URL is not set")
    _redis_client(url).ping()


def _check_rate_limiter() -> None:
    # The limiter fails open, so only this check says loudly that requests are not being limited.
    from jivapay.middleware.rate_limiting import limiter_health

    limiter_health()


READINESS_CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "redis": _check_redis,
    "rate_limiter": _check_rate_limiter,
}


async def _run_check(name: str, check: Callable[[], None]) -> str:
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
    except TimeoutError:
        log.warning("readiness_check_failed", check=name, error="timeout")
        return "timeout"
    except Exception as exc:
        log.warning("readiness_check_failed", check=name, error=f"{type(exc).__name__}: {exc}")
        return "unavailable"
    return "ok"


def metrics_visible_to(client_host: str | None) -> bool:
    """Whether `/metrics` on the API port answers this client (METRICS_PORT, METRICS_ALLOWED_NETWORKS)."""
    settings = get_settings()
    if settings.METRICS_PORT is not None:
        return False
    networks = settings.metrics_networks
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(client_host or "")
    except ValueError:
        return False
    return any(address in network for network in networks)


def health_router(server: str, *, metrics: bool = True) -> APIRouter:
    """`/health`, `/ready` and (unless served on an internal port) `/metrics` for `server`."""
    router = LosslessJSONRouter(tags=["health"])

    @router.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok", "server": server}

    @router.get(
        "/ready",
        summary="Readiness: database, Redis and the rate limiter's storage working",
        responses={503: {"description": "A dependency is unavailable (problem+json)"}},
    )
    async def ready(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}

        async def run(name: str, check: Callable[[], None]) -> None:
            checks[name] = await _run_check(name, check)

        async with anyio.create_task_group() as group:
            for name, check in READINESS_CHECKS.items():
                group.start_soon(run, name, check)
        checks = {name: checks[name] for name in READINESS_CHECKS}
        failed = [name for name, status in checks.items() if status != "ok"]
        if not failed:
            return JSONResponse({"status": "ready", "server": server, "checks": checks})
        return problem_response(
            status=503,
            code="not_ready",
            title="Service not ready",
            detail="Unavailable: " + ", ".join(failed),
            instance=request.url.path,
            server=server,
            checks=checks,
            failed=failed,
            request_id=getattr(request.state, "request_id", None),
        )

    if metrics:

        @router.get("/metrics", include_in_schema=False)
        async def metrics_endpoint(request: Request) -> Response:
            if not metrics_visible_to(request.client.host if request.client else None):
                return problem_response(
                    status=404, code="not_found", title="Not Found", instance=request.url.path
                )
            body, content_type = render_latest()
            return Response(body, media_type=content_type)

    return router
