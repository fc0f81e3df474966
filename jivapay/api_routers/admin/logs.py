"""Logs on the admin server: the audit log with filters, and the critical errors (audit rows of
level `critical` written by `report_critical_error`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import MAX_ID, DbSession, PageParams
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import AuditLevel
from jivapay.permissions import Permission
from jivapay.schemas.admin import AuditLogRead
from jivapay.schemas.common import Page
from jivapay.security import Principal
from jivapay.services import log_queries

router = LosslessJSONRouter(prefix="/admin", tags=["admin: logs"])

CanRead = Annotated[Principal, Depends(require_permission(Permission.AUDIT_LOGS_VIEW_ALL))]


@router.get("/audit-logs", response_model=Page[AuditLogRead], responses=problem_responses(403, 422))
def audit_logs(
    session: DbSession,
    _: CanRead,
    page: PageParams,
    action: Annotated[str | None, Query(max_length=100, description="Exact, or `prefix.*`")] = None,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    target_entity: Annotated[str | None, Query(max_length=64)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    level: AuditLevel | None = None,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
) -> Page[AuditLogRead]:
    """Audit rows, newest first, filtered by action, acting user, target, level and time."""
    return log_queries.list_audit_logs(
        session,
        action=action,
        user_id=user_id,
        target_entity=target_entity,
        target_id=target_id,
        level=level,
        date_from=date_from,
        date_to=date_to,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/logs/critical-errors",
    response_model=Page[AuditLogRead],
    responses=problem_responses(403, 422),
)
def critical_errors(
    session: DbSession,
    _: CanRead,
    page: PageParams,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
) -> Page[AuditLogRead]:
    """Critical errors the processes reported, newest first."""
    return log_queries.list_audit_logs(
        session,
        level=AuditLevel.CRITICAL,
        date_from=date_from,
        date_to=date_to,
        limit=page.limit,
        offset=page.offset,
    )
