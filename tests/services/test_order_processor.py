"""The order processor on one connection: assignment and its holds, retries with backoff, final
failure (a PayOut's store hold released), and the money of the completion that follows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from jivapay.database.base import utcnow
from jivapay.database.models import (
    AuditLog,
    BalancePlatform,
    BalanceStore,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    CallbackDelivery,
    FullRequisitesSettings,
    IncomingOrder,
    OrderHistory,
    ReqTrader,
    RequisiteDailyTurnover,
    RequisiteTurnoverBucket,
    TraderCommission,
)
from jivapay.enums import IncomingOrderStatus, OrderStatus, OrderType
from jivapay.services import fraud_lists, order_processor, requisite_counters
from jivapay.services import order_status_manager as osm
from jivapay.services.order_events import status_change, write_status_change
from jivapay.services.order_processor import process_incoming_batch, process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.utils import config_loader
from jivapay.utils.config_loader import set_config_value
from jivapay.utils.exceptions import InvariantViolation
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader
from tests.services.order_world import D, balance_row
from tests.sql_statements import recorded_statements


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
    deposit = balance_row(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("1000"), D("9.7"))
    assert db.get(ReqTrader, req.id).open_orders == 1

    osm.transition(
        db, public_id=order.public_id, event=osm.OrderEvent.PAYER_CONFIRM, actor=osm.PAYER
    )
    actor = osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id)
    done = osm.transition(db, public_id=order.public_id, event=osm.OrderEvent.CONFIRM, actor=actor)
    assert done.status == OrderStatus.COMPLETED and done.changed

    deposit = balance_row(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("990.3"), D("0"))
    store_balance = balance_row(db, BalanceStore, store_id=store.store.id)
    assert store_balance.balance == D("500") + D("9.5")
    platform = balance_row(db, BalancePlatform, crypto_currency_id=ref.crypto.id)
    assert platform.balance == D("0.2")
    assert db.get(ReqTrader, req.id).open_orders == 0

    # Repeating the confirmation changes nothing and answers the current state.
    again = osm.transition(db, public_id=order.public_id, event=osm.OrderEvent.CONFIRM, actor=actor)
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
    assert balance_row(db, BalanceStore, store_id=store.store.id).frozen == D("20.6")
    result = process_incoming_order(incoming.id)
    order = db.get(OrderHistory, result.order_id)
    assert order.hold_amount == D("20.6") and order.trader_commission == D("0.2")
    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=order.public_id,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
    )
    sb = balance_row(db, BalanceStore, store_id=store.store.id)
    assert (sb.balance, sb.frozen) == (D("479.4"), D("0"))
    assert balance_row(db, BalanceTrader, trader_id=trader.id).balance == D("1020.2")
    assert balance_row(db, BalancePlatform, crypto_currency_id=ref.crypto.id).balance == D("0.4")
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
    assert balance_row(db, BalanceStore, store_id=store.store.id).frozen == 0
    assert reconcile(db) == []


def _failed_once_then_requisite_approved(db, world) -> tuple[Any, Any]:  # type: ignore[no-untyped-def]
    """An intake order whose first attempt found no requisite (under review), then approved:
    the order and that first attempt's result."""
    ref, store, _trader, req = world
    db.execute(
        ReqTrader.__table__.update().where(ReqTrader.id == req.id).values(status="pending_review")
    )
    incoming = make_incoming(db, store, ref)
    first = process_incoming_order(incoming.id)
    assert first.outcome == IncomingOrderStatus.RETRYING
    db.execute(ReqTrader.__table__.update().where(ReqTrader.id == req.id).values(status="approved"))
    db.commit()
    return incoming, first


def test_retry_succeeds_once_a_requisite_fits(db, world) -> None:  # type: ignore[no-untyped-def]
    incoming, first = _failed_once_then_requisite_approved(db, world)
    second = process_incoming_order(incoming.id, now=first.next_attempt_at + timedelta(seconds=1))
    assert second.outcome == IncomingOrderStatus.ASSIGNED


def test_a_batch_goes_round_the_requisites_of_one_priority(db) -> None:  # type: ignore[no-untyped-def]
    # Three requisites of one priority, a batch of nine: three each, in turn.
    ref = make_reference(db)
    store = make_store(db, ref, balance=None)
    requisites = [make_requisite(db, make_trader(db, ref), ref) for _ in range(3)]
    orders = [make_incoming(db, store, ref, amount_fiat=D("100.00")) for _ in range(9)]

    results = process_incoming_batch([o.id for o in orders])

    assert {r.outcome for r in results} == {IncomingOrderStatus.ASSIGNED}
    chosen = [db.get(OrderHistory, r.order_id).requisite_id for r in results]
    assert chosen[3:6] == chosen[:3] and chosen[6:] == chosen[:3], chosen
    assert sorted(chosen[:3]) == sorted(r.id for r in requisites)
    assert reconcile(db) == []


def test_a_payin_not_assigned_within_its_payment_time_fails_as_expired(db) -> None:  # type: ignore[no-untyped-def]
    # Its payer was told how long they had: a requisite handed out later would be paid by no one.
    # A PayOut has no payer waiting, and is assigned however long it waited (retries bound it).
    ref = make_reference(db)
    store = make_store(db, ref, balance=D("100000"), order_ttl_minutes=15)
    trader = make_trader(db, ref)
    make_requisite(db, trader, ref)
    now = utcnow()
    late = make_incoming(db, store, ref, created_at=now - timedelta(minutes=15))
    in_time = make_incoming(db, store, ref, created_at=now - timedelta(minutes=14, seconds=59))
    payout = make_incoming(
        db, store, ref, order_type=OrderType.PAYOUT, created_at=now - timedelta(days=2)
    )
    frozen_before = balance_row(db, BalanceTrader, trader_id=trader.id).frozen

    expired = process_incoming_order(late.id, now=now)
    batch = process_incoming_batch([in_time.id, payout.id], now=now)

    assert expired.outcome == IncomingOrderStatus.FAILED and expired.order_id is None
    assert expired.reason.startswith("expired_before_assignment"), expired.reason
    db.expire_all()
    assert db.get(IncomingOrder, late.id).retry_count == 1  # failed at its first attempt
    assert [r.outcome for r in batch] == [IncomingOrderStatus.ASSIGNED] * 2
    # The expired one held nothing: only the PayIn assigned in time froze the trader's deposit.
    in_time_order = db.get(OrderHistory, batch[0].order_id)
    frozen = balance_row(db, BalanceTrader, trader_id=trader.id).frozen
    assert frozen == frozen_before + in_time_order.hold_amount
    assert reconcile(db) == []


def test_batch_assigns_the_others_when_orders_fail_and_records_each_failure(  # type: ignore[no-untyped-def]
    db, world, unique
) -> None:
    """One transaction, one claim, no savepoint: a fraud deny, no requisite and a missing trader
    commission each refuse their own order before it writes anything, and the order gets its
    failure recorded; the rest are assigned with their rows, holds and callbacks, and the books
    reconcile."""
    ref, store, trader, req = world
    # The world's requisite takes PayIns only; the one PayOut requisite belongs to a trader
    # without any commission row.
    db.execute(
        FullRequisitesSettings.__table__.update()
        .where(FullRequisitesSettings.requisite_id == req.id)
        .values(pay_out=False)
    )
    other = make_trader(db, ref, deposit=D("1000"))
    make_requisite(db, other, ref, pay_in=False)
    db.execute(TraderCommission.__table__.delete().where(TraderCommission.trader_id == other.id))
    fraud_lists.add_entry(
        db,
        kind="customer_id",
        value=f"bad-{unique}",
        list_type="block",
        reason="t",
        actor_user_id=None,
    )
    first = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    denied = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    denied.customer_id = f"bad-{unique}"
    too_big = make_incoming(db, store, ref, amount_fiat=D("5000000.00"))
    payout = make_incoming(db, store, ref, amount_fiat=D("3000.00"), order_type=OrderType.PAYOUT)
    last = make_incoming(db, store, ref, amount_fiat=D("2000.00"))
    db.flush()
    ids = [first.id, denied.id, too_big.id, payout.id, last.id]

    with recorded_statements(db.get_bind()) as statements:
        results = process_incoming_batch([*ids, first.id])  # a repeated id is processed once

    assert [r.incoming_order_id for r in results] == ids
    claims = [s for s in statements if "FROM incoming_orders" in s and "FOR UPDATE" in s]
    # The batch's claim of all five, then each refused order's failure transaction locking its row.
    assert len(claims) == 4 and "IN (" in claims[0]
    # The test's connection turns the batch's commit into a savepoint's release: no savepoint
    # was taken inside the batch, for any order.
    batch = statements[statements.index(claims[0]) :]
    batch = batch[: next(i for i, s in enumerate(batch) if s.startswith("RELEASE SAVEPOINT"))]
    assert len(batch) > 10 and not any(s.startswith("SAVEPOINT") for s in batch)
    outcomes = {r.incoming_order_id: r for r in results}
    assert outcomes[first.id].outcome == IncomingOrderStatus.ASSIGNED
    assert outcomes[last.id].outcome == IncomingOrderStatus.ASSIGNED
    assert outcomes[denied.id].outcome == IncomingOrderStatus.FAILED
    assert outcomes[too_big.id].outcome == IncomingOrderStatus.RETRYING
    assert outcomes[payout.id].outcome == IncomingOrderStatus.RETRYING
    db.expire_all()
    rows = {i: db.get(IncomingOrder, i) for i in ids}
    assert {i: r.status for i, r in rows.items()} == {
        first.id: "assigned",
        denied.id: "failed",
        too_big.id: "retrying",
        payout.id: "retrying",
        last.id: "assigned",
    }
    assert "fraud_denied" in rows[denied.id].failure_reason
    assert "requisite_not_found" in rows[too_big.id].failure_reason
    assert "no commission row" in rows[payout.id].failure_reason
    assert rows[first.id].retry_count == 0 and rows[too_big.id].retry_count == 1
    assert rows[payout.id].retry_count == 1

    orders = db.scalars(select(OrderHistory).where(OrderHistory.incoming_order_id.in_(ids))).all()
    assert sorted(o.incoming_order_id for o in orders) == [first.id, last.id]
    assert {o.requisite_id for o in orders} == {req.id}
    # Holds of both assigned PayIns (9.7 + 19.4), nothing of the failed ones.
    assert balance_row(db, BalanceTrader, trader_id=trader.id).frozen == D("29.1")
    assert balance_row(db, BalanceTrader, trader_id=other.id).frozen == 0
    assert db.get(ReqTrader, req.id).open_orders == 2
    callbacks = db.execute(
        select(CallbackDelivery.incoming_order_id, CallbackDelivery.event_type).where(
            CallbackDelivery.incoming_order_id.in_(ids)
        )
    ).all()
    # A retry is not a status change merchants hear of; the final failure is.
    assert sorted(tuple(c) for c in callbacks) == sorted(
        [(first.id, "order.pending"), (denied.id, "order.failed"), (last.id, "order.pending")]
    )
    assert reconcile(db) == []


def test_a_batch_whose_write_fails_is_rolled_back_and_each_order_processed_alone(  # type: ignore[no-untyped-def]
    db, world, monkeypatch
) -> None:
    """A failure after an order's plan (here its order row cannot be written) fails the whole
    batch: what the batch wrote for the orders before it is rolled back, then every order is
    processed in its own transaction, so each is assigned exactly once and the failing one has
    its attempt recorded."""
    ref, store, trader, req = world
    first, broken, last = (
        make_incoming(db, store, ref, amount_fiat=D("1000.00")) for _ in range(3)
    )
    db.flush()
    real_write = order_processor.write_assignment
    batch_calls: list[list[int]] = []
    real_claim = order_processor._claim_batch

    def claim(session: Any, ids: Any) -> Any:
        batch_calls.append(list(ids))
        return real_claim(session, ids)

    def write(session: Any, *, incoming: Any, **kwargs: Any) -> Any:
        if incoming.id == broken.id:
            raise RuntimeError("the order row could not be written")
        return real_write(session, incoming=incoming, **kwargs)

    alone: list[int] = []
    real_alone = order_processor.process_incoming_order

    def process_alone(incoming_order_id: int, **kwargs: Any) -> Any:
        alone.append(incoming_order_id)
        return real_alone(incoming_order_id, **kwargs)

    monkeypatch.setattr(order_processor, "_claim_batch", claim)
    monkeypatch.setattr(order_processor, "write_assignment", write)
    monkeypatch.setattr(order_processor, "process_incoming_order", process_alone)
    results = process_incoming_batch([first.id, broken.id, last.id])

    assert batch_calls == [[first.id, broken.id, last.id]]
    assert alone == [first.id, broken.id, last.id]
    assert [(r.incoming_order_id, r.outcome) for r in results] == [
        (first.id, "assigned"),
        (broken.id, "retrying"),
        (last.id, "assigned"),
    ]
    db.expire_all()
    orders = db.scalars(
        select(OrderHistory.incoming_order_id).where(
            OrderHistory.incoming_order_id.in_([first.id, broken.id, last.id])
        )
    ).all()
    assert sorted(orders) == [first.id, last.id]
    failed = db.get(IncomingOrder, broken.id)
    assert failed.retry_count == 1 and "could not be written" in failed.failure_reason
    # Two holds of 9.7 and two open orders: nothing of the rolled-back batch stayed.
    assert balance_row(db, BalanceTrader, trader_id=trader.id).frozen == D("19.4")
    assert db.get(ReqTrader, req.id).open_orders == 2
    assert reconcile(db) == []


def test_assignment_numbers_its_callback_after_the_earlier_ones_and_audits_it(db, world) -> None:  # type: ignore[no-untyped-def]
    # The claim counts the order's callback rows; the callback and the audit row share a statement.
    ref, store, _, req = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    change = status_change(
        db, incoming=incoming, order=None, status="manual_review", previous="new"
    )
    write_status_change(db, change)
    db.commit()

    result = process_incoming_order(incoming.id)

    assert result.outcome == "assigned"
    db.expire_all()
    rows = db.scalars(
        select(CallbackDelivery)
        .where(CallbackDelivery.incoming_order_id == incoming.id)
        .order_by(CallbackDelivery.id)
    ).all()
    assert [(r.event_type, r.payload["sequence"], r.order_id) for r in rows] == [
        ("order.manual_review", 1, None),
        ("order.pending", 2, result.order_id),
    ]
    assert rows[1].attempt_count == 0 and rows[1].created_at is not None
    audits = db.scalars(
        select(AuditLog).where(
            AuditLog.target_id == incoming.public_id, AuditLog.action == "order.pending"
        )
    ).all()
    assert [(a.target_entity, a.level, a.details) for a in audits] == [
        ("order", "info", {"from": "new", "to": "pending", "actor": "system", "reason": None})
    ]
    assert db.get(ReqTrader, req.id).open_orders == 1


def test_an_assignment_writes_its_rows_and_the_hold_in_one_statement(db, world) -> None:  # type: ignore[no-untyped-def]
    """The order row is inserted, the intake row moved to `assigned` (its failure reason of the
    earlier attempt cleared, the attempt time set), the requisite's counters moved, the callback
    and audit rows written and the trader's deposit held with its history row, all by one
    statement; nothing writes any of those tables a second time, and the callback and hold rows
    carry the new order's id."""
    req = world[3]
    incoming, first = _failed_once_then_requisite_approved(db, world)
    at = first.next_attempt_at + timedelta(seconds=1)
    with recorded_statements(db.get_bind()) as statements:
        second = process_incoming_order(incoming.id, now=at)

    assert second.outcome == IncomingOrderStatus.ASSIGNED
    writes = [s for s in statements if "INSERT INTO order_history" in s]
    assert len(writes) == 1
    written_together = (
        "UPDATE incoming_orders",
        "UPDATE req_traders",
        "INSERT INTO requisite_turnover_buckets",
        "INSERT INTO requisite_daily_turnover",
        "INSERT INTO callback_deliveries",
        "INSERT INTO audit_logs",
        "UPDATE balance_traders",
        "INSERT INTO balance_trader_crypto_history",
    )
    for write in written_together:
        assert [s for s in statements if write in s] == writes, write
    db.expire_all()
    row = db.get(IncomingOrder, incoming.id)
    assert (row.status, row.failure_reason, row.next_attempt_at) == ("assigned", None, None)
    assert row.last_attempt_at == at and row.retry_count == 1
    order = db.get(OrderHistory, second.order_id)
    assert (order.incoming_order_id, order.requisite_id, order.status) == (
        incoming.id,
        req.id,
        "pending",
    )
    callback = db.scalars(
        select(CallbackDelivery).where(CallbackDelivery.order_id == second.order_id)
    ).one()
    assert callback.payload["data"]["order_id"] == incoming.public_id
    assert db.get(ReqTrader, req.id).open_orders == 1
    hold = db.scalars(
        select(BalanceTraderCryptoHistory).where(
            BalanceTraderCryptoHistory.order_id == second.order_id
        )
    ).one()
    assert (hold.operation, hold.incoming_order_id) == ("freeze", incoming.id)
    assert hold.frozen_delta == order.hold_amount > 0
    audit = db.scalars(
        select(AuditLog).where(
            AuditLog.target_id == incoming.public_id, AuditLog.action == "order.pending"
        )
    ).one()
    assert audit.details["to"] == "pending"


def test_no_parameter_of_the_assignment_statement_is_named_like_a_column_it_writes() -> None:
    """An INSERT or UPDATE inside the statement would take an execution parameter named like one
    of its columns into its column list (a `callback_url` parameter put that column into the intake
    row's SET clause, and the statement failed): every parameter carries a prefix no column has."""
    from sqlalchemy.dialects import postgresql

    compiled = order_processor._write_statement(OrderType.PAYIN).compile(
        dialect=postgresql.psycopg.dialect()
    )
    tables = (
        BalanceTrader,
        BalanceTraderCryptoHistory,
        IncomingOrder,
        OrderHistory,
        CallbackDelivery,
        AuditLog,
        ReqTrader,
        RequisiteTurnoverBucket,
        RequisiteDailyTurnover,
    )
    columns = {c.name for model in tables for c in model.__table__.columns}
    # The compiler's own parameters for columns it fills on UPDATE (the balance row's `updated_at`).
    generated = {c.name for m in tables for c in m.__table__.columns if c.onupdate is not None}
    assert "updated_at" in set(compiled.params) & generated
    given = set(compiled.params) - generated
    assert len(given) > 40
    assert given & columns == set()


def _settings_cached_anew(db) -> None:  # type: ignore[no-untyped-def]
    """The run-time settings read again just before a measured assignment: the cache lasts a few
    seconds, and on a slow machine its expiry could fall inside the assignment (one read more)."""
    config_loader.invalidate_cache()
    config_loader.runtime_settings(db)


def test_an_assignment_is_four_statements_and_reads_the_store_once(db, world) -> None:  # type: ignore[no-untyped-def]
    """The claim (with the order's store), the selector's two and the write, once the process's
    caches are warm: a store attribute the claim does not load would cost a fifth."""
    ref, store, _trader, _req = world
    warm_up, incoming = (make_incoming(db, store, ref, amount_fiat=D(a)) for a in ("100", "200"))
    db.commit()
    # The first fills the process's caches (settings, currency codes), as a worker's first does.
    assert process_incoming_order(warm_up.id).outcome == "assigned"
    _settings_cached_anew(db)
    with recorded_statements() as statements:
        assert process_incoming_order(incoming.id).outcome == "assigned"
    executed = [s for s in statements if "SAVEPOINT" not in s]  # the test's outer transaction
    assert len(executed) == 4, executed
    assert sum("FROM merchant_stores" in s or "JOIN merchant_stores" in s for s in executed) == 1


def test_the_fraud_checks_reads_are_one_statement(db, world) -> None:  # type: ignore[no-untyped-def]
    """An order with a customer id and address, as a checkout sends them: the fraud check reads
    the block and allow lists and the customer's unpaid expired PayIns in one statement (velocity
    is counted in Redis), so the assignment is five statements."""
    ref, store, _trader, _req = world
    warm_up, incoming = (make_incoming(db, store, ref, amount_fiat=D(a)) for a in ("100", "200"))
    for n, order in enumerate((warm_up, incoming)):
        order.customer_id, order.customer_ip = f"customer-{order.id}", f"192.0.2.{n + 1}"
    db.commit()
    assert process_incoming_order(warm_up.id).outcome == "assigned"
    _settings_cached_anew(db)
    with recorded_statements() as statements:
        assert process_incoming_order(incoming.id).outcome == "assigned"
    executed = [s for s in statements if "SAVEPOINT" not in s]
    assert len(executed) == 5, executed
    assert sum("FROM fraud_lists" in s for s in executed) == 1
    assert sum("FROM order_history" in s for s in executed) == 1  # the same statement


def test_the_assignment_statement_is_not_parsed_again_on_each_execution(
    db, world, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """psycopg caches the conversion of a statement's placeholders only for texts within its size
    limits, which `database.engine` raises: the write statement, too long for psycopg's own
    limits, was parsed in full on every assignment (0.2 ms of CPU each)."""
    from psycopg import _queries

    ref, store, _trader, _req = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    db.commit()
    parsed: list[bytes] = []
    uncached = _queries._query2pg_nocache

    def counting(query: bytes, encoding: str) -> Any:
        parsed.append(bytes(query))
        return uncached(query, encoding)

    # Only the uncached path calls the module's function; the cache wraps the original.
    monkeypatch.setattr(_queries, "_query2pg_nocache", counting)
    assert process_incoming_order(incoming.id).outcome == "assigned"
    assert [q[:40] for q in parsed if b"INSERT INTO order_history" in q] == []


@pytest.mark.parametrize("order_type", [OrderType.PAYIN, OrderType.PAYOUT])
def test_the_assignment_statement_fits_the_statement_cache(order_type: OrderType) -> None:
    """The write statement stays within the limits under which psycopg caches its conversion
    (raised by `database.engine`, and still the ones psycopg reads): a statement that outgrows
    them is parsed again on every assignment."""
    from psycopg import _queries
    from sqlalchemy.dialects import postgresql

    from jivapay.database import engine

    compiled = order_processor._write_statement(order_type).compile(
        dialect=postgresql.psycopg.dialect()
    )
    assert _queries.MAX_CACHED_STATEMENT_LENGTH == engine.QUERY_CACHE_MAX_BYTES
    assert _queries.MAX_CACHED_STATEMENT_PARAMS == engine.QUERY_CACHE_MAX_PARAMETERS
    size, parameters = len(str(compiled).encode()), len(compiled.params)
    assert size <= engine.QUERY_CACHE_MAX_BYTES and parameters <= engine.QUERY_CACHE_MAX_PARAMETERS
    # Beyond psycopg's own limits (4,096 bytes, 50 parameters): why they are raised.
    assert size > 4096 or parameters > 50


def test_an_assignment_whose_counters_did_not_all_land_is_refused() -> None:
    """Three counter rows are written per assignment; fewer means the requisite row is gone."""
    requisite_counters.check_counted(7, 3)
    with pytest.raises(InvariantViolation, match="requisite 7 counters were not updated"):
        requisite_counters.check_counted(7, 2)


def test_an_assignment_decrypts_nothing(db, world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The claim loads the intake order's store without its keys (each load decrypted both), and
    nothing else in the assignment reads a secret."""
    from jivapay.database import types

    ref, store, _trader, _req = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    db.commit()
    decrypted: list[str] = []
    decrypt = types.decrypt_value

    def counting(value: str) -> str:
        decrypted.append(value)
        return decrypt(value)

    monkeypatch.setattr(types, "decrypt_value", counting)
    assert process_incoming_order(incoming.id).outcome == "assigned"
    assert decrypted == []


def test_an_assignment_whose_hold_is_not_covered_leaves_nothing_written(  # type: ignore[no-untyped-def]
    db, world, monkeypatch
) -> None:
    """The hold rides in the assignment's statement after the order, counter, callback and audit
    rows: when the deposit does not cover it (here a hold above the whole deposit), the attempt
    fails with the deposit's figures and its transaction takes every one of those rows back; the
    order waits for its retry and the books still reconcile."""
    ref, store, trader, req = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    monkeypatch.setattr(order_processor, "payin_trader_hold", lambda *_: D("1000.00000001"))

    result = process_incoming_order(incoming.id)

    assert result.outcome == IncomingOrderStatus.RETRYING
    assert result.reason == (
        "insufficient_balance: available balance 1000.00000000 does not cover 1000.00000001"
    )
    db.expire_all()
    assert db.get(IncomingOrder, incoming.id).status == "retrying"
    assert (
        db.scalars(select(OrderHistory).where(OrderHistory.incoming_order_id == incoming.id)).all()
        == []
    )
    deposit = balance_row(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("1000"), D("0"))
    assert db.get(ReqTrader, req.id).open_orders == 0
    assert (
        db.scalars(
            select(RequisiteDailyTurnover).where(RequisiteDailyTurnover.requisite_id == req.id)
        ).all()
        == []
    )
    assert (
        db.scalars(
            select(CallbackDelivery).where(CallbackDelivery.incoming_order_id == incoming.id)
        ).all()
        == []
    )
    assert (
        db.scalars(
            select(AuditLog).where(
                AuditLog.target_id == incoming.public_id, AuditLog.action == "order.pending"
            )
        ).all()
        == []
    )
    holds = select(BalanceTraderCryptoHistory).where(
        BalanceTraderCryptoHistory.incoming_order_id == incoming.id
    )
    assert db.scalars(holds).all() == []
    assert reconcile(db) == []
