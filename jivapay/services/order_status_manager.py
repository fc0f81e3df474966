"""The order state machine (docs/lifecycle.md): who may move an order from which status to which, and
what each move does to held money, the requisite's counters, the audit log and merchant callbacks.

| event          | from            | to        | who                                                        |
|----------------|-----------------|-----------|------------------------------------------------------------|
| payer_confirm  | pending         | paid      | payer (PayIn only), before the payment deadline            |
| confirm        | pending, paid   | completed | assigned trader; support/admin with orders:complete:all    |
| cancel         | pending         | canceled  | payer, owning merchant/store, assigned trader; staff with orders:cancel:all |
| expire         | pending         | expired   | scheduler                                                  |
| escalate       | paid            | disputed  | scheduler (confirmation deadline passed)                   |
| dispute        | pending, paid   | disputed  | owning merchant/store, assigned trader, payer; staff with disputes:open:all |
| resolve        | disputed        | completed or canceled | support/admin with disputes:resolve:all        |

Deadlines have one definition, `deadline_passed` (the sweepers select `deadline <= now` alike).
Expire and escalate wait for theirs. The payer's confirmation must come before `expires_at`: once
it passed, a pending order's payer is refused (409, nothing written) although only the scheduler
writes `expired`. The other moves are not timed: the trader may confirm money that arrived late,
and cancel and dispute stay open to those allowed them.

Completion moves the held money to its destinations (balance_manager); cancel and expiry release
the hold and take the order out of the requisite's turnover. Every move locks the order row first,
then the requisite, then balances (in balance_manager's fixed order), so concurrent moves of one
order serialise and no two transactions wait on each other in opposite orders. A request for a move
that already happened answers the current state and changes nothing; an impossible one raises
`InvalidStatusTransition` (409). An object the actor does not own is `NotFound` (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import IncomingOrder, OrderHistory
from jivapay.enums import ActorKind, OrderEvent, OrderStatus, OrderType
from jivapay.permissions import Permission, check_permission
from jivapay.services import balance_manager, requisite_counters
from jivapay.services.order_events import status_change, write_status_change
from jivapay.utils.config_loader import runtime_settings
from jivapay.utils.exceptions import InvalidStatusTransition, NotFound, PermissionDenied


@dataclass(frozen=True)
class Actor:
    """Who asks for a transition. Merchants act through a store key (`store_id`) or their login.
    `ip_address`: the client's address when the actor asks over HTTP (its audit rows record it);
    None for the scheduler."""

    kind: ActorKind
    user_id: int | None = None
    merchant_id: int | None = None
    store_id: int | None = None
    trader_id: int | None = None
    permissions: tuple[str, ...] = ()
    ip_address: str | None = None


PAYER = Actor(ActorKind.PAYER)
SYSTEM = Actor(ActorKind.SYSTEM)
_STAFF = frozenset({ActorKind.SUPPORT, ActorKind.ADMIN})


@dataclass(frozen=True)
class Rule:
    sources: frozenset[OrderStatus]
    target: OrderStatus
    actors: frozenset[ActorKind]
    staff_permission: str | None = None


_S = OrderStatus
_A = ActorKind
TRANSITIONS: dict[OrderEvent, Rule] = {
    OrderEvent.PAYER_CONFIRM: Rule(frozenset({_S.PENDING}), _S.PAID, frozenset({_A.PAYER})),
    OrderEvent.CONFIRM: Rule(
        frozenset({_S.PENDING, _S.PAID}),
        _S.COMPLETED,
        frozenset({_A.TRADER, *_STAFF}),
        Permission.ORDERS_COMPLETE_ALL,
    ),
    OrderEvent.CANCEL: Rule(
        frozenset({_S.PENDING}),
        _S.CANCELED,
        frozenset({_A.PAYER, _A.MERCHANT, _A.TRADER, *_STAFF}),
        Permission.ORDERS_CANCEL_ALL,
    ),
    OrderEvent.EXPIRE: Rule(frozenset({_S.PENDING}), _S.EXPIRED, frozenset({_A.SYSTEM})),
    OrderEvent.ESCALATE: Rule(frozenset({_S.PAID}), _S.DISPUTED, frozenset({_A.SYSTEM})),
    OrderEvent.DISPUTE: Rule(
        frozenset({_S.PENDING, _S.PAID}),
        _S.DISPUTED,
        frozenset({_A.PAYER, _A.MERCHANT, _A.TRADER, *_STAFF}),
        Permission.DISPUTES_OPEN_ALL,
    ),
    OrderEvent.RESOLVE_COMPLETE: Rule(
        frozenset({_S.DISPUTED}), _S.COMPLETED, frozenset(_STAFF), Permission.DISPUTES_RESOLVE_ALL
    ),
    OrderEvent.RESOLVE_CANCEL: Rule(
        frozenset({_S.DISPUTED}), _S.CANCELED, frozenset(_STAFF), Permission.DISPUTES_RESOLVE_ALL
    ),
}
# A resolution repeats only on an order that was disputed: a completed or canceled order that never
# was has no dispute to resolve.
_RESOLUTIONS = frozenset({OrderEvent.RESOLVE_COMPLETE, OrderEvent.RESOLVE_CANCEL})


@dataclass(frozen=True)
class TransitionResult:
    order_id: int
    public_id: str
    status: OrderStatus
    changed: bool
    previous: OrderStatus  # the status the order had under the lock (the audit's "old")


# --------------------------------------------------------------------------- lookup and checks


def lock_order(session: Session, *, public_id: str) -> OrderHistory:
    """The order with this public id, locked for the transition; 404 when there is none."""
    order = session.scalars(
        select(OrderHistory)
        .where(OrderHistory.public_id == public_id)
        .with_for_update()
        # The caller may have read the order before the lock: take the locked row's values.
        .execution_options(populate_existing=True)
    ).first()
    if order is None:
        raise NotFound("order not found")
    return order


def _owns(actor: Actor, order: OrderHistory) -> bool:
    if actor.kind == ActorKind.MERCHANT:
        return order.store_id == actor.store_id or order.merchant_id == actor.merchant_id
    if actor.kind == ActorKind.TRADER:
        return order.trader_id == actor.trader_id
    return True  # payer (the public id is the capability), staff (by permission), system


def _authorize(actor: Actor, order: OrderHistory, event: OrderEvent, rule: Rule) -> None:
    if not _owns(actor, order):
        raise NotFound("order not found")
    if actor.kind not in rule.actors:
        raise PermissionDenied(f"{actor.kind} may not {event} an order")
    if actor.kind in _STAFF:
        assert rule.staff_permission is not None
        if not check_permission(actor.permissions, rule.staff_permission):
            raise PermissionDenied(f"missing permission {rule.staff_permission}")
    if event == OrderEvent.PAYER_CONFIRM and order.order_type != OrderType.PAYIN:
        raise InvalidStatusTransition("only a PayIn is confirmed by the payer")


# --------------------------------------------------------------------------- effects


def _release_hold(session: Session, order: OrderHistory) -> None:
    if order.order_type == OrderType.PAYIN:
        balance_manager.release_trader_hold(
            session,
            trader_id=order.trader_id,
            crypto_currency_id=order.crypto_currency_id,
            amount=order.hold_amount,
            incoming_order_id=order.incoming_order_id,
            order_id=order.id,
        )
    else:
        balance_manager.release_store_hold(
            session,
            store_id=order.store_id,
            crypto_currency_id=order.crypto_currency_id,
            amount=order.hold_amount,
            incoming_order_id=order.incoming_order_id,
            order_id=order.id,
        )


def _apply(
    session: Session, order: OrderHistory, target: OrderStatus, now: datetime, reason: str | None
) -> None:
    if target == OrderStatus.PAID:
        order.paid_at = now
        minutes = runtime_settings(session).TRADER_CONFIRM_TIMEOUT_MINUTES
        order.confirm_deadline_at = now + timedelta(minutes=minutes)
    elif target == OrderStatus.COMPLETED:
        # The requisite slot closes first: requisite rows are always locked before balances.
        requisite_counters.count_completed_order(session, order=order)
        balance_manager.complete_order(session, order=order)
        order.completed_at = now
    elif target in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
        requisite_counters.count_canceled_order(session, order=order)
        _release_hold(session, order)
        order.canceled_at = now
        order.cancellation_reason = reason or target.value
    elif target == OrderStatus.DISPUTED:
        order.disputed_at = now
        order.dispute_reason = reason


def deadline_passed(deadline: datetime | None, now: datetime) -> bool:
    """Whether `deadline` has passed at `now`: from its very instant on, as the sweepers select
    (`deadline <= now`). No deadline never passes."""
    return deadline is not None and deadline <= now


def payment_time_up(order: OrderHistory, now: datetime | None = None) -> bool:
    """A pending order whose payment deadline passed: expired in all but the sweeper's write. Its
    payer may no longer confirm it and is no longer shown where to pay."""
    return order.status == OrderStatus.PENDING and deadline_passed(
        order.expires_at, now or utcnow()
    )


def _check_deadline(order: OrderHistory, event: OrderEvent, now: datetime) -> None:
    waits_for = {
        OrderEvent.EXPIRE: order.expires_at,
        OrderEvent.ESCALATE: order.confirm_deadline_at,
    }
    if event in waits_for and not deadline_passed(waits_for[event], now):
        raise InvalidStatusTransition(f"cannot {event} an order before its deadline")
    if event == OrderEvent.PAYER_CONFIRM and payment_time_up(order, now):
        raise InvalidStatusTransition(
            "the time to pay for this order has run out: it can no longer be confirmed as paid",
            extra={
                "current_status": order.status,
                "expires_at": order.expires_at.isoformat(),
            },
        )


def check_transition(
    order: OrderHistory, *, event: OrderEvent, actor: Actor, now: datetime | None = None
) -> bool:
    """Raise unless `actor` may apply `event` to `order` at `now` (default: now); False when it
    already happened."""
    rule = TRANSITIONS[event]
    _authorize(actor, order, event, rule)
    current = OrderStatus(order.status)
    if current == rule.target and not (event in _RESOLUTIONS and order.disputed_at is None):
        return False
    if current not in rule.sources:
        raise InvalidStatusTransition(
            f"cannot {event} an order that is {current}",
            extra={"current_status": current.value},
        )
    _check_deadline(order, event, now or utcnow())
    return True


# --------------------------------------------------------------------------- the one entry point


def transition(
    session: Session,
    *,
    public_id: str,
    event: OrderEvent,
    actor: Actor,
    reason: str | None = None,
    now: datetime | None = None,
) -> TransitionResult:
    """Apply `event` to the order `public_id` on behalf of `actor` (flushes; the caller commits)."""
    rule = TRANSITIONS[event]
    order = lock_order(session, public_id=public_id)
    current = OrderStatus(order.status)
    now = now or utcnow()
    if not check_transition(order, event=event, actor=actor, now=now):
        return TransitionResult(order.id, order.public_id, current, changed=False, previous=current)
    _apply(session, order, rule.target, now, reason)
    order.status = rule.target.value
    order.updated_at = now
    incoming = session.get(IncomingOrder, order.incoming_order_id)
    assert incoming is not None
    write_status_change(
        session,
        status_change(
            session,
            incoming=incoming,
            order=order,
            status=rule.target.value,
            previous=current.value,
            actor_user_id=actor.user_id,
            actor_kind=actor.kind.value,
            reason=reason,
            ip_address=actor.ip_address,
        ),
    )
    session.flush()
    return TransitionResult(order.id, order.public_id, rule.target, changed=True, previous=current)


# Named entry points, as the routers and the scheduler call them. The confirmations carry files,
# so each has one path through `document_service`: the trader's (and staff's) confirm is
# `confirm_with_receipt` (a PayOut needs its receipt), the payer's `payer_confirm_with_receipt`.


def cancel_order(
    session: Session, *, public_id: str, actor: Actor, reason: str | None = None
) -> TransitionResult:
    """Cancel a pending order and release its hold."""
    return transition(
        session, public_id=public_id, event=OrderEvent.CANCEL, actor=actor, reason=reason
    )


def open_dispute(
    session: Session, *, public_id: str, actor: Actor, reason: str | None = None
) -> TransitionResult:
    """Open a dispute on a pending or paid order."""
    return transition(
        session, public_id=public_id, event=OrderEvent.DISPUTE, actor=actor, reason=reason
    )


def resolve_dispute(
    session: Session, *, public_id: str, actor: Actor, complete: bool, reason: str
) -> TransitionResult:
    """Support/admin close a dispute as completed (money moves) or canceled (hold released)."""
    event = OrderEvent.RESOLVE_COMPLETE if complete else OrderEvent.RESOLVE_CANCEL
    return transition(session, public_id=public_id, event=event, actor=actor, reason=reason)


def expire_order(
    session: Session, *, public_id: str, now: datetime | None = None
) -> TransitionResult:
    """The scheduler expires an unpaid order whose deadline passed."""
    return transition(
        session,
        public_id=public_id,
        event=OrderEvent.EXPIRE,
        actor=SYSTEM,
        reason="expired",
        now=now,
    )


def escalate_unconfirmed(
    session: Session, *, public_id: str, now: datetime | None = None
) -> TransitionResult:
    """The scheduler turns a paid order the trader did not confirm in time into a dispute."""
    return transition(
        session,
        public_id=public_id,
        event=OrderEvent.ESCALATE,
        actor=SYSTEM,
        reason="trader did not confirm before the deadline",
        now=now,
    )
