"""An order's status timeline as staff read it: every audit row about the order (intake, fraud
decisions, reviews, status changes, staff interventions), oldest first. The audit log is the
source: each status change writes its row in the transaction that makes the change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import AuditLog
from jivapay.schemas.staff import TimelineEntry

ORDER_ENTITY = "order"
_MAX_ENTRIES = 500


def _text(details: dict[str, Any], key: str) -> str | None:
    value = details.get(key)
    return None if value is None else str(value)


def order_timeline(session: Session, *, public_id: str) -> list[TimelineEntry]:
    """The audit rows of one order (by public id), oldest first."""
    rows = session.scalars(
        select(AuditLog)
        .where(AuditLog.target_entity == ORDER_ENTITY, AuditLog.target_id == public_id)
        .order_by(AuditLog.created_at, AuditLog.id)
        .limit(_MAX_ENTRIES)
    ).all()
    entries = []
    for row in rows:
        details = dict(row.details or {})
        entries.append(
            TimelineEntry(
                at=row.created_at,
                action=row.action,
                from_status=_text(details, "from"),
                to_status=_text(details, "to"),
                actor_user_id=row.user_id,
                actor=_text(details, "actor"),
                ip_address=row.ip_address,
                reason=_text(details, "reason"),
                details=details,
            )
        )
    return entries
