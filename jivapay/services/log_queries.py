"""Read side of the audit log for administrators: filtered, newest first, paginated (the critical
errors are the rows of level `critical` that `report_critical_error` writes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.base import as_utc
from jivapay.database.models import AuditLog
from jivapay.enums import AuditLevel
from jivapay.schemas.admin import AuditLogRead
from jivapay.schemas.common import Page
from jivapay.utils.exceptions import ValidationFailed


def list_audit_logs(
    session: Session,
    *,
    action: str | None = None,
    user_id: int | None = None,
    target_entity: str | None = None,
    target_id: str | None = None,
    level: AuditLevel | None = None,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    limit: int,
    offset: int,
) -> Page[AuditLogRead]:
    """Audit rows matching every given filter; `action` ending in `.*` matches a prefix."""
    if date_from is not None and date_to is not None and as_utc(date_from) > as_utc(date_to):
        raise ValidationFailed("date_from must not be after date_to")
    stmt = select(AuditLog)
    if action:
        if action.endswith(".*"):
            prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(AuditLog.action.like(prefix + "%"))
        else:
            stmt = stmt.where(AuditLog.action == action)
    if user_id is not None:
        stmt = stmt.where(AuditLog.user_id == user_id)
    if target_entity:
        stmt = stmt.where(AuditLog.target_entity == target_entity)
    if target_id:
        stmt = stmt.where(AuditLog.target_id == target_id)
    if level is not None:
        stmt = stmt.where(AuditLog.level == AuditLevel(level).value)
    if date_from is not None:
        stmt = stmt.where(AuditLog.created_at >= date_from)
    if date_to is not None:
        stmt = stmt.where(AuditLog.created_at < date_to)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(AuditLog.created_at.desc(), AuditLog.id.desc()).limit(limit).offset(offset)
    ).all()
    return Page(
        items=[AuditLogRead.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )
