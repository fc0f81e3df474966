"""Orders the fraud checks held for manual review (`incoming_orders.status = manual_review`):
support or admins (permission `incoming_orders:review:all`) release or reject them.

| action  | from          | to     | effect                                                          |
|---------|---------------|--------|-----------------------------------------------------------------|
| release | manual_review | new    | attempts reset, announced to the workers on commit; REVIEW      |
|         |               |        | rules are not raised again for this order (DENY rules apply)    |
| reject  | manual_review | failed | `order_processor.fail_incoming`: a PayOut's store hold released  |

Both lock the intake row first and re-check its status under the lock, and both are audited
(`fraud.review_released` is also what tells `fraud_detector` the order was released).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import IncomingOrder
from jivapay.enums import AuditLevel, IncomingOrderStatus
from jivapay.permissions import Permission, check_permission
from jivapay.services import intake_queue
from jivapay.services.audit_logger import log_event
from jivapay.services.fraud_detector import RELEASED_ACTION
from jivapay.services.order_processor import fail_incoming
from jivapay.services.order_status_manager import Actor, ActorKind
from jivapay.utils.exceptions import InvalidStatusTransition, NotFound, PermissionDenied

REJECTED_PREFIX = "rejected after fraud review"


@dataclass(frozen=True)
class ReviewResult:
    incoming_order_id: int
    public_id: str
    status: str


def _authorize(actor: Actor) -> None:
    if actor.kind == ActorKind.SYSTEM:
        return
    if actor.kind not in (ActorKind.ADMIN, ActorKind.SUPPORT):
        raise PermissionDenied(f"{actor.kind} may not review orders")
    if not check_permission(actor.permissions, Permission.INCOMING_ORDERS_REVIEW_ALL):
        raise PermissionDenied(f"missing permission {Permission.INCOMING_ORDERS_REVIEW_ALL}")


def _lock_held(session: Session, incoming_order_id: int) -> IncomingOrder:
    incoming = session.scalars(
        select(IncomingOrder)
        .where(IncomingOrder.id == incoming_order_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).first()
    if incoming is None:
        raise NotFound("order not found")
    if incoming.status != IncomingOrderStatus.MANUAL_REVIEW:
        raise InvalidStatusTransition(
            f"the order is {incoming.status}, not in manual review",
            extra={"current_status": incoming.status},
        )
    return incoming


def release_for_processing(
    session: Session, *, incoming_order_id: int, actor: Actor, now: datetime | None = None
) -> ReviewResult:
    """Send a held order back to the queue (`new`), announced to the workers on commit."""
    _authorize(actor)
    incoming = _lock_held(session, incoming_order_id)
    now = now or utcnow()
    incoming.status = IncomingOrderStatus.NEW.value
    incoming.retry_count = 0
    incoming.failure_reason = None
    incoming.next_attempt_at = now
    log_event(
        session,
        action=RELEASED_ACTION,
        user_id=actor.user_id,
        target_entity="order",
        target_id=incoming.public_id,
        details={"actor": actor.kind.value, "from": "manual_review", "to": "new"},
        ip_address=actor.ip_address,
        level=AuditLevel.WARNING,
    )
    session.flush()
    intake_queue.announce(session, incoming.id)
    return ReviewResult(incoming.id, incoming.public_id, incoming.status)


def reject(
    session: Session,
    *,
    incoming_order_id: int,
    actor: Actor,
    reason: str,
    now: datetime | None = None,
) -> ReviewResult:
    """Fail a held order (a PayOut's store hold is released) with the reviewer's reason."""
    _authorize(actor)
    incoming = _lock_held(session, incoming_order_id)
    text = f"{REJECTED_PREFIX}: {reason}" if reason else REJECTED_PREFIX
    fail_incoming(
        session,
        incoming=incoming,
        reason=text[:1000],
        now=now or utcnow(),
        previous=IncomingOrderStatus.MANUAL_REVIEW.value,
        ip_address=actor.ip_address,
    )
    log_event(
        session,
        action="fraud.review_rejected",
        user_id=actor.user_id,
        target_entity="order",
        target_id=incoming.public_id,
        details={"actor": actor.kind.value, "reason": reason},
        ip_address=actor.ip_address,
        level=AuditLevel.WARNING,
    )
    session.flush()
    return ReviewResult(incoming.id, incoming.public_id, incoming.status)
