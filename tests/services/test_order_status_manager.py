"""The state machine on one connection: cancel and expiry (holds and turnover released), who may
move whose order, dispute and resolution, the payment deadline (the payer's confirm before it, the
trader's also after)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from jivapay.database.models import (
    BalanceTrader,
    OrderHistory,
    ReqTrader,
    RequisiteDailyTurnover,
    RequisiteTurnoverBucket,
)
from jivapay.enums import OrderStatus
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.utils.exceptions import InvalidStatusTransition, NotFound, PermissionDenied
from tests.factories import make_incoming
from tests.services.order_world import D, balance_row


def test_cancel_and_expiry_release_holds_and_turnover(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, req = world
    a = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("100.00")).id)
    b = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("200.00")).id)
    oa, ob = db.get(OrderHistory, a.order_id), db.get(OrderHistory, b.order_id)
    assert balance_row(db, BalanceTrader, trader_id=trader.id).frozen == D("0.97") + D("1.94")

    osm.cancel_order(
        db, public_id=oa.public_id, actor=osm.Actor(osm.ActorKind.MERCHANT, store_id=store.store.id)
    )
    with pytest.raises(InvalidStatusTransition):
        osm.expire_order(db, public_id=ob.public_id)  # deadline not reached
    expired = osm.expire_order(db, public_id=ob.public_id, now=ob.expires_at + timedelta(seconds=1))
    assert expired.status == OrderStatus.EXPIRED
    deposit = balance_row(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("1000"), D("0"))
    assert db.get(ReqTrader, req.id).open_orders == 0
    turnover = db.scalar(
        select(func.sum(RequisiteTurnoverBucket.amount_fiat)).where(
            RequisiteTurnoverBucket.requisite_id == req.id
        )
    )
    day = db.scalar(
        select(func.sum(RequisiteDailyTurnover.amount_fiat)).where(
            RequisiteDailyTurnover.requisite_id == req.id
        )
    )
    assert turnover == 0 and day == 0  # canceled and expired orders leave the turnover
    with pytest.raises(InvalidStatusTransition):
        osm.transition(
            db,
            event=osm.OrderEvent.CONFIRM,
            public_id=oa.public_id,
            actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
        )
    assert reconcile(db) == []


def test_another_owner_gets_404_and_staff_needs_permission(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    res = process_incoming_order(make_incoming(db, store, ref).id)
    public_id = db.get(OrderHistory, res.order_id).public_id
    with pytest.raises(NotFound):
        osm.transition(
            db,
            event=osm.OrderEvent.CONFIRM,
            public_id=public_id,
            actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id + 999),
        )
    with pytest.raises(NotFound):
        osm.cancel_order(
            db,
            public_id=public_id,
            actor=osm.Actor(osm.ActorKind.MERCHANT, store_id=-1, merchant_id=-1),
        )
    with pytest.raises(PermissionDenied):
        osm.transition(
            db,
            event=osm.OrderEvent.CONFIRM,
            public_id=public_id,
            actor=osm.Actor(osm.ActorKind.SUPPORT, permissions=("orders:view:all",)),
        )
    ok = osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=public_id,
        actor=osm.Actor(osm.ActorKind.ADMIN, permissions=("superuser",)),
    )
    assert ok.status == OrderStatus.COMPLETED


def test_dispute_then_resolution(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    res = process_incoming_order(make_incoming(db, store, ref).id)
    public_id = db.get(OrderHistory, res.order_id).public_id
    osm.transition(db, public_id=public_id, event=osm.OrderEvent.PAYER_CONFIRM, actor=osm.PAYER)
    osm.open_dispute(
        db,
        public_id=public_id,
        actor=osm.Actor(osm.ActorKind.MERCHANT, store_id=store.store.id),
        reason="not credited",
    )
    staff = osm.Actor(osm.ActorKind.SUPPORT, permissions=("disputes:resolve:all",))
    result = osm.resolve_dispute(
        db, public_id=public_id, actor=staff, complete=False, reason="payer never paid"
    )
    assert result.status == OrderStatus.CANCELED
    assert balance_row(db, BalanceTrader, trader_id=trader.id).frozen == 0
    assert reconcile(db) == []


@pytest.mark.parametrize("complete", [True, False])
def test_a_resolution_of_an_order_never_disputed_is_refused(db, world, complete) -> None:  # type: ignore[no-untyped-def]
    # Completed by its trader, or canceled by its payer: there was no dispute, so "resolving" one
    # is impossible (409), not a repeat answered with the current state.
    ref, store, trader, _ = world
    res = process_incoming_order(make_incoming(db, store, ref).id)
    public_id = db.get(OrderHistory, res.order_id).public_id
    if complete:
        osm.transition(
            db,
            public_id=public_id,
            event=osm.OrderEvent.CONFIRM,
            actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
        )
    else:
        osm.cancel_order(db, public_id=public_id, actor=osm.PAYER)
    staff = osm.Actor(osm.ActorKind.SUPPORT, permissions=("disputes:resolve:all",))

    with pytest.raises(InvalidStatusTransition):
        osm.resolve_dispute(db, public_id=public_id, actor=staff, complete=complete, reason="x")

    # A resolution that did happen repeats as before: the current state, nothing changed.
    other = process_incoming_order(make_incoming(db, store, ref).id)
    other_id = db.get(OrderHistory, other.order_id).public_id
    osm.open_dispute(db, public_id=other_id, actor=osm.PAYER, reason="not credited")
    first = osm.resolve_dispute(db, public_id=other_id, actor=staff, complete=complete, reason="x")
    again = osm.resolve_dispute(db, public_id=other_id, actor=staff, complete=complete, reason="x")
    assert (first.changed, first.previous) == (True, OrderStatus.DISPUTED)
    assert (again.changed, again.status, again.previous) == (False, first.status, first.status)
    assert reconcile(db) == []


def test_the_payer_confirms_only_before_the_payment_deadline_the_trader_also_after(
    db, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    res = process_incoming_order(make_incoming(db, store, ref).id)
    order = db.get(OrderHistory, res.order_id)
    public_id, deadline = order.public_id, order.expires_at

    # Past the deadline (from its very instant on, as the sweeper selects) the payer is refused
    # and nothing changes: the sweeper expires the order later.
    for late in (deadline, deadline + timedelta(hours=5)):
        with pytest.raises(InvalidStatusTransition, match="time to pay") as refused:
            osm.transition(
                db,
                public_id=public_id,
                event=osm.OrderEvent.PAYER_CONFIRM,
                actor=osm.PAYER,
                now=late,
            )
        assert refused.value.extra["current_status"] == "pending"
    db.refresh(order)
    assert (order.status, order.paid_at) == ("pending", None)
    tick = timedelta(microseconds=1)
    assert osm.deadline_passed(deadline, deadline)
    assert not osm.deadline_passed(deadline, deadline - tick)
    assert not osm.deadline_passed(None, deadline)
    assert not osm.payment_time_up(order, deadline - tick) and osm.payment_time_up(order, deadline)

    # Money that arrived late is still the trader's to confirm: no deadline on CONFIRM.
    done = osm.transition(
        db,
        public_id=public_id,
        event=osm.OrderEvent.CONFIRM,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
        now=deadline + timedelta(hours=5),
    )
    assert done.status == OrderStatus.COMPLETED and done.changed
    assert reconcile(db) == []


def test_just_before_the_payment_deadline_the_payer_confirms(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _, _ = world
    res = process_incoming_order(make_incoming(db, store, ref).id)
    order = db.get(OrderHistory, res.order_id)
    paid = osm.transition(
        db,
        public_id=order.public_id,
        event=osm.OrderEvent.PAYER_CONFIRM,
        actor=osm.PAYER,
        now=order.expires_at - timedelta(microseconds=1),
    )
    assert paid.status == OrderStatus.PAID and paid.changed
    # Once paid the payment deadline no longer matters: the payer's repeat answers the state.
    again = osm.transition(
        db,
        public_id=order.public_id,
        event=osm.OrderEvent.PAYER_CONFIRM,
        actor=osm.PAYER,
        now=order.expires_at + timedelta(hours=1),
    )
    assert (again.status, again.changed) == (OrderStatus.PAID, False)
    with pytest.raises(InvalidStatusTransition):  # nor is a paid order expired
        osm.expire_order(db, public_id=order.public_id, now=order.expires_at + timedelta(hours=1))
    db.refresh(order)
    confirm_by = order.confirm_deadline_at
    with pytest.raises(InvalidStatusTransition, match="before its deadline"):
        osm.escalate_unconfirmed(
            db, public_id=order.public_id, now=confirm_by - timedelta(microseconds=1)
        )
    escalated = osm.escalate_unconfirmed(db, public_id=order.public_id, now=confirm_by)
    assert escalated.status == OrderStatus.DISPUTED
