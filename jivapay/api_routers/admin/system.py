"""System checks on the admin server: `POST /admin/system/worker-ping`, the worker round trip."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.permissions import Permission
from jivapay.schemas.admin import WorkerPingRead
from jivapay.security import Principal
from jivapay.utils.exceptions import ServiceUnavailable

router = LosslessJSONRouter(prefix="/admin/system", tags=["admin: system"])

PING_TASK = "system.ping"


@router.post("/worker-ping", response_model=WorkerPingRead, responses=problem_responses(403, 503))
def worker_ping(
    _: Annotated[Principal, Depends(require_permission(Permission.SETTINGS_VIEW_ALL))],
    timeout: Annotated[float, Query(gt=0, le=30, description="Seconds to wait")] = 5.0,
) -> WorkerPingRead:
    """Send the worker a ping (it touches the database) and wait for the answer; 503 if none."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from jivapay.worker.app import celery_app

    started = time.perf_counter()
    try:
        result = celery_app.send_task(PING_TASK)
        try:
            answer: dict[str, Any] = result.get(timeout=timeout)
        finally:
            result.forget()
    except CeleryTimeout:
        raise ServiceUnavailable(
            f"no worker answered within {timeout:g} s", code="worker_unavailable"
        ) from None
    except Exception as exc:
        raise ServiceUnavailable(
            f"the worker could not be reached ({type(exc).__name__})", code="worker_unavailable"
        ) from None
    elapsed = Decimal(int((time.perf_counter() - started) * 1000))
    return WorkerPingRead(
        hostname=answer.get("hostname"), answered_at=answer.get("at"), round_trip_ms=elapsed
    )
