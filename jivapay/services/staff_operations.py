"""Staff (support and admin) interventions: completing, canceling and disputing orders, resolving
disputes, releasing or rejecting orders held for review, deposits, withdrawals and adjustments,
fraud-list edits and callback re-sends.

Each operation goes through the service that owns the change (`order_status_manager`,
`manual_review`, `balance_manager`, `fraud_lists`, `callback_service`) and then writes one
`staff.<operation>` audit row with the actor, the caller's IP, the reason and the old and new
values, in the same transaction. A repeat answers the current state with `changed: false`; an
impossible transition is `InvalidStatusTransition` (409). Services flush; the request commits.

| operation       | from                      | to                       |
|-----------------|---------------------------|--------------------------|
| complete        | pending, paid             | completed (money moves)  |
| cancel          | pending                   | canceled (hold released) |
| dispute         | pending, paid             | disputed                 |
| resolve         | disputed                  | completed or canceled    |
| release (intake)| manual_review             | new (queued again)       |
| reject (intake) | manual_review             | failed (PayOut hold released) |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    AuditLog,
    CallbackDelivery,
    CryptoCurrency,
    IncomingOrder,
)
from jivapay.enums import AuditLevel, IncomingOrderStatus, Role
from jivapay.security import Principal
from jivapay.services import (
    balance_manager,
    callback_service,
    document_service,
    fraud_lists,
    manual_review,
)
from jivapay.services import order_status_manager as osm
from jivapay.services.audit_logger import log_event
from jivapay.services.document_service import FileUpload
from jivapay.services.fraud_detector import RELEASED_ACTION
from jivapay.services.fraud_lists import FraudListEntry
from jivapay.services.order_queries import visible_order
from jivapay.utils.exceptions import InvalidStatusTransition, NotFound, ValidationFailed


@dataclass(frozen=True)
class StaffContext:
    """Who acts and from where: what every staff audit row records."""

    principal: Principal
    ip_address: str | None

    @property
    def actor(self) -> osm.Actor:
        kind = osm.ActorKind.ADMIN if self.principal.role == Role.ADMIN else osm.ActorKind.SUPPORT
        return osm.Actor(
            kind,
            user_id=self.principal.user_id,
            permissions=self.principal.permissions,
            ip_address=self.ip_address,
        )


def _audit(
    session: Session,
    ctx: StaffContext,
    *,
    operation: str,
    entity: str,
    target: object,
    reason: str | None,
    old: Any,
    new: Any,
    level: AuditLevel = AuditLevel.INFO,
    **extra: Any,
) -> None:
    log_event(
        session,
        action=f"staff.{operation}",
        user_id=ctx.principal.user_id,
        target_entity=entity,
        target_id=target,
        ip_address=ctx.ip_address,
        details={
            "actor": ctx.principal.role.value,
            "reason": reason,
            "old": old,
            "new": new,
            **extra,
        },
        level=level,
    )


# --------------------------------------------------------------------------- orders


def _transition(
    session: Session,
    ctx: StaffContext,
    *,
    public_id: str,
    event: osm.OrderEvent,
    operation: str,
    reason: str,
) -> osm.TransitionResult:
    visible_order(session, principal=ctx.principal, public_id=public_id)
    result = osm.transition(
        session, public_id=public_id, event=event, actor=ctx.actor, reason=reason
    )
    if result.changed:
        _audit(
            session,
            ctx,
            operation=operation,
            entity="order",
            target=public_id,
            reason=reason,
            old={"status": result.previous.value},
            new={"status": result.status.value},
            level=AuditLevel.WARNING,
        )
    return result


def complete_order(
    session: Session, *, ctx: StaffContext, public_id: str, reason: str
) -> osm.TransitionResult:
    """Complete a pending or paid order on the trader's behalf (money moves, callback sent)."""
    return _transition(
        session,
        ctx,
        public_id=public_id,
        event=osm.OrderEvent.CONFIRM,
        operation="order_complete",
        reason=reason,
    )


def cancel_order(
    session: Session, *, ctx: StaffContext, public_id: str, reason: str
) -> osm.TransitionResult:
    """Cancel a pending order (its hold is released, callback sent)."""
    return _transition(
        session,
        ctx,
        public_id=public_id,
        event=osm.OrderEvent.CANCEL,
        operation="order_cancel",
        reason=reason,
    )


def resolve_dispute(
    session: Session,
    *,
    ctx: StaffContext,
    public_id: str,
    outcome: Literal["completed", "canceled"],
    reason: str,
) -> osm.TransitionResult:
    """Close a dispute as completed (money moves) or canceled (hold released)."""
    event = (
        osm.OrderEvent.RESOLVE_COMPLETE if outcome == "completed" else osm.OrderEvent.RESOLVE_CANCEL
    )
    return _transition(
        session,
        ctx,
        public_id=public_id,
        event=event,
        operation="dispute_resolve",
        reason=reason,
    )


def open_dispute(
    session: Session,
    *,
    ctx: StaffContext,
    public_id: str,
    reason: str | None,
    evidence: Sequence[FileUpload],
) -> osm.TransitionResult:
    """Open a dispute on a pending or paid order, with optional evidence files."""
    visible_order(session, principal=ctx.principal, public_id=public_id)
    result = document_service.dispute_with_evidence(
        session, public_id=public_id, actor=ctx.actor, reason=reason, evidence=evidence
    )
    if result.changed:
        _audit(
            session,
            ctx,
            operation="dispute_open",
            entity="order",
            target=public_id,
            reason=reason,
            old={"status": result.previous.value},
            new={"status": result.status.value},
            evidence_files=len(evidence),
            level=AuditLevel.WARNING,
        )
    return result


# --------------------------------------------------------------------------- intake queue


@dataclass(frozen=True)
class IntakeResult:
    public_id: str
    status: IncomingOrderStatus
    changed: bool


def _incoming(session: Session, public_id: str) -> IncomingOrder:
    row = session.scalars(select(IncomingOrder).where(IncomingOrder.public_id == public_id)).first()
    if row is None:
        raise NotFound("order not found")
    return row


def _was(session: Session, public_id: str, action: str) -> bool:
    return bool(
        session.scalar(
            select(
                exists().where(
                    AuditLog.target_entity == "order",
                    AuditLog.target_id == public_id,
                    AuditLog.action == action,
                )
            )
        )
    )


def release_incoming(
    session: Session, *, ctx: StaffContext, public_id: str, reason: str | None = None
) -> IntakeResult:
    """Send an order held for fraud review back to processing; a repeat changes nothing."""
    incoming = _incoming(session, public_id)
    try:
        result = manual_review.release_for_processing(
            session, incoming_order_id=incoming.id, actor=ctx.actor
        )
    except InvalidStatusTransition:
        session.refresh(incoming)
        if incoming.status != IncomingOrderStatus.FAILED and _was(
            session, public_id, RELEASED_ACTION
        ):
            return IntakeResult(public_id, IncomingOrderStatus(incoming.status), changed=False)
        raise
    _audit(
        session,
        ctx,
        operation="intake_release",
        entity="order",
        target=public_id,
        reason=reason,
        old={"status": IncomingOrderStatus.MANUAL_REVIEW.value},
        new={"status": result.status},
        level=AuditLevel.WARNING,
    )
    return IntakeResult(public_id, IncomingOrderStatus(result.status), changed=True)


def reject_incoming(
    session: Session, *, ctx: StaffContext, public_id: str, reason: str
) -> IntakeResult:
    """Fail an order held for fraud review (a PayOut's hold is released); a repeat is a no-op."""
    incoming = _incoming(session, public_id)
    try:
        result = manual_review.reject(
            session, incoming_order_id=incoming.id, actor=ctx.actor, reason=reason
        )
    except InvalidStatusTransition:
        session.refresh(incoming)
        if incoming.status == IncomingOrderStatus.FAILED and _was(
            session, public_id, "fraud.review_rejected"
        ):
            return IntakeResult(public_id, IncomingOrderStatus.FAILED, changed=False)
        raise
    _audit(
        session,
        ctx,
        operation="intake_reject",
        entity="order",
        target=public_id,
        reason=reason,
        old={"status": IncomingOrderStatus.MANUAL_REVIEW.value},
        new={"status": result.status},
        level=AuditLevel.WARNING,
    )
    return IntakeResult(public_id, IncomingOrderStatus(result.status), changed=True)


# --------------------------------------------------------------------------- money


@dataclass(frozen=True)
class MoneyMove:
    account: str
    account_id: int | None
    crypto_currency: str
    amount: Decimal
    balance: Decimal
    frozen: Decimal
    history_id: int


def crypto_currency_id(session: Session, code: str) -> int:
    """The id of a crypto currency by code, active or not (money still held in a retired currency
    must stay movable); `ValidationFailed` for an unknown one."""
    row = session.scalars(select(CryptoCurrency).where(CryptoCurrency.code == code.upper())).first()
    if row is None:
        raise ValidationFailed(f"unknown crypto currency {code!r}", code="unknown_currency")
    return row.id


_MOVES: dict[tuple[str, str], Callable[..., balance_manager.BalanceChange]] = {
    ("trader", "deposit"): balance_manager.deposit_trader_balance,
    ("trader", "withdraw"): balance_manager.withdraw_trader_balance,
    ("store", "deposit"): balance_manager.deposit_store_balance,
    ("store", "withdraw"): balance_manager.withdraw_store_balance,
}


def move_balance(
    session: Session,
    *,
    ctx: StaffContext,
    account: Literal["trader", "store"],
    direction: Literal["deposit", "withdraw"],
    account_id: int,
    crypto_currency: str,
    amount: Decimal,
    reason: str,
) -> MoneyMove:
    """Deposit to or withdraw from a trader's deposit or a store's balance (available only)."""
    cid = crypto_currency_id(session, crypto_currency)
    key = "trader_id" if account == "trader" else "store_id"
    change = _MOVES[(account, direction)](
        session,
        **{key: account_id},
        crypto_currency_id=cid,
        amount=amount,
        actor_user_id=ctx.principal.user_id,
        reason=reason,
        ip_address=ctx.ip_address,
    )
    delta = amount if direction == "deposit" else -amount
    _audit(
        session,
        ctx,
        operation=f"balance_{direction}",
        entity=f"balance_{account}",
        target=change.balance_id,
        reason=reason,
        old={"balance": change.balance_after - delta, "frozen": change.frozen_after},
        new={"balance": change.balance_after, "frozen": change.frozen_after},
        account_id=account_id,
        amount=delta,
        history_id=change.history_id,
        level=AuditLevel.WARNING,
    )
    return MoneyMove(
        account,
        account_id,
        crypto_currency.upper(),
        delta,
        change.balance_after,
        change.frozen_after,
        change.history_id,
    )


def adjust_balance(
    session: Session,
    *,
    ctx: StaffContext,
    account: Literal["trader", "store", "platform"],
    account_id: int | None,
    crypto_currency: str,
    amount: Decimal,
    reason: str,
) -> MoneyMove:
    """A signed manual correction of a store, trader or platform balance."""
    cid = crypto_currency_id(session, crypto_currency)
    change = balance_manager.adjust_balance(
        session,
        account=account,
        account_id=account_id,
        crypto_currency_id=cid,
        amount=amount,
        actor_user_id=ctx.principal.user_id,
        reason=reason,
        ip_address=ctx.ip_address,
    )
    _audit(
        session,
        ctx,
        operation="balance_adjust",
        entity=f"balance_{account}",
        target=change.balance_id,
        reason=reason,
        old={"balance": change.balance_after - amount, "frozen": change.frozen_after},
        new={"balance": change.balance_after, "frozen": change.frozen_after},
        account_id=account_id,
        amount=amount,
        history_id=change.history_id,
        level=AuditLevel.WARNING,
    )
    return MoneyMove(
        account,
        account_id,
        crypto_currency.upper(),
        amount,
        change.balance_after,
        change.frozen_after,
        change.history_id,
    )


# --------------------------------------------------------------------------- fraud lists


def add_fraud_entry(
    session: Session,
    *,
    ctx: StaffContext,
    kind: str,
    value: str,
    list_type: str,
    reason: str,
) -> FraudListEntry:
    """Add a block/allow entry; a payout card is stored only as its keyed hash."""
    entry = fraud_lists.add_entry(
        session,
        kind=kind,
        value=value,
        list_type=list_type,
        reason=reason,
        actor_user_id=ctx.principal.user_id,
        ip_address=ctx.ip_address,
    )
    _audit(
        session,
        ctx,
        operation="fraud_list_add",
        entity="fraud_list",
        target=entry.id,
        reason=reason,
        old=None,
        new={"kind": entry.kind.value, "list": entry.list_type.value, "value": entry.value},
    )
    return entry


def remove_fraud_entry(
    session: Session, *, ctx: StaffContext, entry_id: int, reason: str | None
) -> FraudListEntry:
    """Delete a fraud-list entry by id."""
    entry = fraud_lists.remove_entry(
        session,
        entry_id=entry_id,
        actor_user_id=ctx.principal.user_id,
        reason=reason,
        ip_address=ctx.ip_address,
    )
    _audit(
        session,
        ctx,
        operation="fraud_list_remove",
        entity="fraud_list",
        target=entry_id,
        reason=reason,
        old={"kind": entry.kind.value, "list": entry.list_type.value, "value": entry.value},
        new=None,
    )
    return entry


# --------------------------------------------------------------------------- callbacks


def resend_callback(session: Session, *, ctx: StaffContext, delivery_id: int) -> int:
    """Queue a delivery of any store again now; returns the delivery id."""
    row = session.get(CallbackDelivery, delivery_id)
    if row is None:
        raise NotFound("Callback delivery not found", code="callback_delivery_not_found")
    before = {"status": row.status, "attempt_count": row.attempt_count}
    view = callback_service.resend_delivery(
        session,
        store_id=row.store_id,
        delivery_id=delivery_id,
        actor_user_id=ctx.principal.user_id,
        ip_address=ctx.ip_address,
    )
    _audit(
        session,
        ctx,
        operation="callback_resend",
        entity="callback_delivery",
        target=delivery_id,
        reason=None,
        old=before,
        new={"status": view.status, "attempt_count": view.attempt_count},
        store_id=row.store_id,
    )
    return delivery_id
