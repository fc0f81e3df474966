"""The audit log: one `audit_logs` row per security- or money-relevant event, written in the caller's
transaction (so it commits or rolls back with the change it describes). Details are scrubbed, so a
password, key or card number handed in by mistake never reaches the log."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CTE, Table, bindparam, insert
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import AuditLog
from jivapay.enums import AuditLevel
from jivapay.utils.notifications import scrub

_MAX_TARGET_ID = 64
_MAX_IP = 64


def _json_safe(value: Any) -> Any:
    # JSONB cannot hold Decimal, datetime or enums; their text form is exact and readable.
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def audit_values(
    *,
    action: str,
    user_id: int | None = None,
    target_entity: str | None = None,
    target_id: object = None,
    details: dict[str, Any] | None = None,
    ip_address: str | None = None,
    level: AuditLevel = AuditLevel.INFO,
) -> dict[str, Any]:
    """The column values of one audit row (scrubbed), for a caller that inserts it in a statement
    of its own (`order_events` writes it with the callback row in one round trip)."""
    return {
        "created_at": utcnow(),
        "action": action,
        "user_id": user_id,
        "target_entity": target_entity,
        "target_id": None if target_id is None else str(target_id)[:_MAX_TARGET_ID],
        "details": scrub(_json_safe(details or {})),
        "ip_address": ip_address[:_MAX_IP] if ip_address else None,
        "level": AuditLevel(level).value,
    }


_PREFIX = "audit_"


def audit_cte() -> CTE:
    """The audit row's INSERT as a data-modifying CTE (`audit_row`) whose values are bound
    parameters named `audit_<column>`, for a statement built once that writes its own row and the
    audit row in one round trip; `audit_parameters` gives the values."""
    table = cast(Table, AuditLog.__table__)
    columns = audit_values(action="").keys()
    return insert(table).values({c: bindparam(_PREFIX + c) for c in columns}).cte("audit_row")


def audit_parameters(**event: Any) -> dict[str, Any]:
    """`audit_values(**event)` as the parameters of `audit_cte`."""
    return {_PREFIX + column: value for column, value in audit_values(**event).items()}


def log_event(
    session: Session,
    *,
    action: str,
    user_id: int | None = None,
    target_entity: str | None = None,
    target_id: object = None,
    details: dict[str, Any] | None = None,
    ip_address: str | None = None,
    level: AuditLevel = AuditLevel.INFO,
) -> AuditLog:
    """Add one audit row to `session` and flush it (the caller commits)."""
    row = AuditLog(
        **audit_values(
            action=action,
            user_id=user_id,
            target_entity=target_entity,
            target_id=target_id,
            details=details,
            ip_address=ip_address,
            level=level,
        )
    )
    session.add(row)
    session.flush()
    return row
