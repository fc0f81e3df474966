"""The order engine on one connection: assignment, holds, completion, cancel, expiry, retries."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from jivapay.database.base import utcnow
from jivapay.database.models import (
    BalancePlatform,
    BalanceStore,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    CallbackDelivery,
    IncomingOrder,
    OrderHistory,
    ReqTrader,
    RequisiteDailyTurnover,
    RequisiteTurnoverBucket,
)
from jivapay.enums import IncomingOrderStatus, OrderStatus, OrderType
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.utils.config_loader import set_config_value
from jivapay.utils.exceptions import InvalidStatusTransition, NotFound, PermissionDenied
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

D = Decimal


def _balance(db, model, **key):  # type: ignore[no-untyped-def]
    db.expire_all()
    return db.scalars(select(model).filter_by(**key)).one()


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, payin_percent=D("5"), payout_percent=D("3"), balance=D("500"))
    trader = make_trader(db, ref, payin_percent=D("3"), payout_percent=D("1"), deposit=D("1000"))
    req = make_requisite(db, trader, ref)
    return ref, store, trader, req


def test_payin_assignment_freezes_then_completion_moves_exact_amounts(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, req = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    result = process_incoming_order(incoming.id)
    assert result.outcome == "assigned"

    order = db.get(OrderHistory, result.order_id)
    assert order.requisite_id == req.id and order.status == "pending"
    # C = 1000 / 100 = 10; store 5% = 0.5; trader 3% = 0.3; hold = C - C*t = 9.7
    assert (order.amount_crypto, order.store_commission, order.trader_commission) == (
        D("10.00000000"),
        D("0.50000000"),
        D("0.30000000"),
    )
    assert order.platform_profit == D("0.20000000") and order.hold_amount == D("9.70000000")
    deposit = _balance(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("1000"), D("9.7"))
    assert db.get(ReqTrader, req.id).open_orders == 1

    osm.confirm_payment_by_payer(db, public_id=order.public_id)
    actor = osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id)
    done = osm.confirm_by_trader(db, public_id=order.public_id, actor=actor)
    assert done.status == OrderStatus.COMPLETED and done.changed

    deposit = _balance(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("990.3"), D("0"))
    store_balance = _balance(db, BalanceStore, store_id=store.store.id)
    assert store_balance.balance == D("500") + D("9.5")
    platform = _balance(db, BalancePlatform, crypto_currency_id=ref.crypto.id)
    assert platform.balance == D("0.2")
    assert db.get(ReqTrader, req.id).open_orders == 0

    # Repeating the confirmation changes nothing and answers the current state.
    again = osm.confirm_by_trader(db, public_id=order.public_id, actor=actor)
    assert again.status == OrderStatus.COMPLETED and not again.changed
    assert reconcile(db) == []
    events = db.scalars(
        select(CallbackDelivery.event_type).where(CallbackDelivery.incoming_order_id == incoming.id)
    ).all()
    assert events == ["order.pending", "order.paid", "order.completed"]


def test_payout_holds_store_at_intake_and_pays_trader_on_completion(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("2000.00"), order_type=OrderType.PAYOUT)
    # C = 20; store 3% = 0.6 -> hold 20.6 frozen at intake
    assert _balance(db, BalanceStore, store_id=store.store.id).frozen == D("20.6")
    result = process_incoming_order(incoming.id)
    order = db.get(OrderHistory, result.order_id)
    assert order.hold_amount == D("20.6") and order.trader_commission == D("0.2")
    osm.confirm_by_trader(
        db, public_id=order.public_id, actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id)
    )
    sb = _balance(db, BalanceStore, store_id=store.store.id)
    assert (sb.balance, sb.frozen) == (D("479.4"), D("0"))
    assert _balance(db, BalanceTrader, trader_id=trader.id).balance == D("1020.2")
    assert _balance(db, BalancePlatform, crypto_currency_id=ref.crypto.id).balance == D("0.4")
    assert reconcile(db) == []


def test_cancel_and_expiry_release_holds_and_turnover(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, req = world
    a = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("100.00")).id)
    b = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("200.00")).id)
    oa, ob = db.get(OrderHistory, a.order_id), db.get(OrderHistory, b.order_id)
    assert _balance(db, BalanceTrader, trader_id=trader.id).frozen == D("0.97") + D("1.94")

    osm.cancel_order(
        db, public_id=oa.public_id, actor=osm.Actor(osm.ActorKind.MERCHANT, store_id=store.store.id)
    )
    with pytest.raises(InvalidStatusTransition):
        osm.expire_order(db, public_id=ob.public_id)  # deadline not reached
    expired = osm.expire_order(db, public_id=ob.public_id, now=ob.expires_at + timedelta(seconds=1))
    assert expired.status == OrderStatus.EXPIRED
    deposit = _balance(db, BalanceTrader, trader_id=trader.id)
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
        osm.confirm_by_trader(
            db, public_id=oa.public_id, actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id)
        )
    assert reconcile(db) == []


def test_another_owner_gets_404_and_staff_needs_permission(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    res = process_incoming_order(make_incoming(db, store, ref).id)
    public_id = db.get(OrderHistory, res.order_id).public_id
    with pytest.raises(NotFound):
        osm.confirm_by_trader(
            db,
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
        osm.confirm_by_trader(
            db,
            public_id=public_id,
            actor=osm.Actor(osm.ActorKind.SUPPORT, permissions=("orders:view:all",)),
        )
    ok = osm.confirm_by_trader(
        db, public_id=public_id, actor=osm.Actor(osm.ActorKind.ADMIN, permissions=("superuser",))
    )
    assert ok.status == OrderStatus.COMPLETED


def test_dispute_then_resolution(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    res = process_incoming_order(make_incoming(db, store, ref).id)
    public_id = db.get(OrderHistory, res.order_id).public_id
    osm.confirm_payment_by_payer(db, public_id=public_id)
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
    assert _balance(db, BalanceTrader, trader_id=trader.id).frozen == 0
    assert reconcile(db) == []


def test_no_requisite_retries_with_backoff_then_fails_and_releases_payout_hold(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _trader, _req = world
    set_config_value(db, "MAX_ORDER_RETRIES", 2)
    set_config_value(db, "RETRY_DELAY_SECONDS", 10)
    incoming = make_incoming(
        db, store, ref, amount_fiat=D("5000000.00"), order_type=OrderType.PAYIN
    )
    incoming.amount_fiat = D("5000000.00")
    first = process_incoming_order(incoming.id)
    assert first.outcome == IncomingOrderStatus.RETRYING
    assert first.next_attempt_at is not None
    skipped = process_incoming_order(incoming.id)  # not due yet
    assert skipped.outcome == "skipped"
    second = process_incoming_order(incoming.id, now=first.next_attempt_at + timedelta(seconds=1))
    assert second.outcome == IncomingOrderStatus.FAILED
    db.expire_all()
    row = db.get(IncomingOrder, incoming.id)
    assert row.retry_count == 2 and "requisite_not_found" in row.failure_reason

    payout = make_incoming(db, store, ref, amount_fiat=D("3000.00"), order_type=OrderType.PAYOUT)
    db.execute(ReqTrader.__table__.update().values(status="blocked"))
    process_incoming_order(payout.id)
    process_incoming_order(payout.id, now=utcnow() + timedelta(hours=1))
    assert _balance(db, BalanceStore, store_id=store.store.id).frozen == 0
    assert reconcile(db) == []


def test_retry_succeeds_once_a_requisite_fits(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _trader, req = world
    db.execute(
        ReqTrader.__table__.update().where(ReqTrader.id == req.id).values(status="pending_review")
    )
    incoming = make_incoming(db, store, ref)
    first = process_incoming_order(incoming.id)
    assert first.outcome == IncomingOrderStatus.RETRYING
    db.execute(ReqTrader.__table__.update().where(ReqTrader.id == req.id).values(status="approved"))
    second = process_incoming_order(incoming.id, now=first.next_attempt_at + timedelta(seconds=1))
    assert second.outcome == IncomingOrderStatus.ASSIGNED


def test_selector_honours_priority_round_robin_and_limits(db) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    store = make_store(db, ref, balance=None)
    preferred = make_trader(db, ref, priority=1)
    other = make_trader(db, ref, priority=5)
    p1 = make_requisite(db, preferred, ref, max_concurrent=1)
    p2 = make_requisite(db, preferred, ref, total_limit=D("150"), window_minutes=60)
    o1 = make_requisite(db, other, ref, day_max=D("1000"))
    chosen = []
    for _ in range(4):
        res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("100.00")).id)
        chosen.append(db.get(OrderHistory, res.order_id).requisite_id)
    # p1 (never used) first; p1 is then full (1 open order) -> p2; p2's window 150 is full -> o1.
    assert chosen == [p1.id, p2.id, o1.id, o1.id]
    deposit_history = db.scalar(
        select(func.count())
        .select_from(BalanceTraderCryptoHistory)
        .where(BalanceTraderCryptoHistory.operation == "freeze")
    )
    assert deposit_history == 4
    assert reconcile(db) == []


def test_payin_needs_trader_deposit(db) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    store = make_store(db, ref)
    poor = make_trader(db, ref, deposit=D("5"))
    make_requisite(db, poor, ref)
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("1000.00")).id)
    assert res.outcome == IncomingOrderStatus.RETRYING
    assert "requisite_not_found" in (res.reason or "")
