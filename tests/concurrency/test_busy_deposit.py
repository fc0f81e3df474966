"""A requisite passed over only because another worker holds its trader's deposit row is lock
timing, not lack of money: the processor runs the main transaction again before the attempt counts
(`RequisiteBusy`), waiting on those tries for the requisite and the deposit (at most `LOCK_WAIT`)
instead of passing over them, and only an order still blocked after `BUSY_ATTEMPTS` spends a retry.
The same holds for a requisite row another worker holds.

Real sessions on PostgreSQL: a second connection holds the deposit row `FOR UPDATE` while the
processor works on its own connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from jivapay.database.models import IncomingOrder, OrderHistory
from jivapay.services import order_processor
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.requisite_selector import find_suitable_requisite
from jivapay.utils.exceptions import RequisiteBusy, RequisiteNotFound
from tests.factories import make_incoming
from tests.services.order_world import D, build_world


def _one_order(factory: sessionmaker[Session]) -> tuple[int, int]:
    with factory() as session:
        ref, store, trader, _ = build_world(session)
        incoming = make_incoming(session, store, ref, amount_fiat=D("1000.00"))
        session.commit()
        return incoming.id, trader.id


_DEPOSIT = "balance_traders"
_REQUISITES = "req_traders"


@contextmanager
def _held(
    factory: sessionmaker[Session], trader_id: int, table: str = _DEPOSIT
) -> Iterator[Session]:
    """Another worker's transaction holding the trader's deposit row (as during its assignment)
    or its requisite rows (as its batch does)."""
    with factory() as holder:
        holder.execute(
            text(f"SELECT id FROM {table} WHERE trader_id = :t FOR UPDATE"),
            {"t": trader_id},
        ).all()
        yield holder
        holder.rollback()


def test_a_held_requisite_is_busy_not_missing(committed_db: sessionmaker[Session]) -> None:
    incoming_id, trader_id = _one_order(committed_db)
    with _held(committed_db, trader_id, _REQUISITES), committed_db() as session:
        order = session.get(IncomingOrder, incoming_id)
        assert order is not None
        with pytest.raises(RequisiteBusy) as busy:
            find_suitable_requisite(session, order=order, now=order.created_at)
        assert "requisite_busy=1" in str(busy.value)


def test_a_try_after_a_busy_requisite_waits_for_it(
    committed_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held by another worker (its batch), the only requisite is busy on the first try; the second
    waits for it and takes it once that transaction ends, without spending a retry; held through
    every try, the order spends one retry, as for a deposit."""
    incoming_id, trader_id = _one_order(committed_db)
    with _held(committed_db, trader_id, _REQUISITES) as holder:
        release = threading.Timer(0.05, holder.rollback)
        monkeypatch.setattr(order_processor.time, "sleep", lambda _seconds: release.start())
        result = process_incoming_order(incoming_id)
        release.join()
    assert result.outcome == "assigned"

    with committed_db() as session:
        ref, store, _, _ = build_world(session)
        second_id = make_incoming(session, store, ref, amount_fiat=D("1000.00")).id
        second_trader = session.execute(
            text("SELECT trader_id FROM req_traders ORDER BY id DESC LIMIT 1")
        ).scalar_one()
        session.commit()
    monkeypatch.setattr(order_processor.time, "sleep", lambda _seconds: None)
    with _held(committed_db, second_trader, _REQUISITES):
        result = process_incoming_order(second_id)
    assert result.outcome == "retrying"
    with committed_db() as session:
        incoming = session.get(IncomingOrder, second_id)
        assert incoming is not None
        assert incoming.retry_count == 1
        assert "a requisite stayed busy for 100ms" in (incoming.failure_reason or "")


def test_a_held_deposit_is_busy_and_a_short_deposit_is_not(
    committed_db: sessionmaker[Session],
) -> None:
    incoming_id, trader_id = _one_order(committed_db)
    with _held(committed_db, trader_id), committed_db() as session:
        order = session.get(IncomingOrder, incoming_id)
        assert order is not None
        with pytest.raises(RequisiteBusy) as busy:
            find_suitable_requisite(session, order=order, now=order.created_at)
        assert "deposit_busy=1" in str(busy.value)
    with committed_db() as session:
        session.execute(
            text("UPDATE balance_traders SET balance = 1 WHERE trader_id = :t"), {"t": trader_id}
        )
        order = session.get(IncomingOrder, incoming_id)
        assert order is not None
        with pytest.raises(RequisiteNotFound) as short:
            find_suitable_requisite(session, order=order, now=order.created_at)
        assert not isinstance(short.value, RequisiteBusy)
        assert "no eligible requisite" in str(short.value)


def test_busy_deposit_is_tried_again_at_once_and_assigns_without_spending_a_retry(
    committed_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming_id, trader_id = _one_order(committed_db)
    pauses: list[float] = []
    with _held(committed_db, trader_id) as holder:

        def pause(seconds: float) -> None:
            # The other worker commits while this one pauses.
            pauses.append(seconds)
            holder.rollback()

        monkeypatch.setattr(order_processor.time, "sleep", pause)
        result = process_incoming_order(incoming_id)

    assert result.outcome == "assigned" and len(pauses) == 1
    with committed_db() as session:
        incoming = session.get(IncomingOrder, incoming_id)
        assert incoming is not None
        assert (incoming.status, incoming.retry_count, incoming.failure_reason) == (
            "assigned",
            0,
            None,
        )
        owner = session.scalars(
            select(OrderHistory.trader_id).where(OrderHistory.incoming_order_id == incoming_id)
        ).one()
        assert owner == trader_id


def test_a_deposit_busy_through_every_try_spends_one_retry(
    committed_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming_id, trader_id = _one_order(committed_db)
    pauses: list[float] = []
    monkeypatch.setattr(order_processor.time, "sleep", pauses.append)
    with _held(committed_db, trader_id):
        result = process_incoming_order(incoming_id)

    assert result.outcome == "retrying"
    assert len(pauses) == order_processor.BUSY_ATTEMPTS - 1
    assert all(
        0 <= p <= order_processor.BUSY_PAUSE_SECONDS * order_processor.BUSY_ATTEMPTS for p in pauses
    )
    with committed_db() as session:
        incoming = session.get(IncomingOrder, incoming_id)
        assert incoming is not None
        assert incoming.retry_count == 1
        # The last try waited for the deposit and gave up after LOCK_WAIT.
        assert (incoming.failure_reason or "").startswith("requisite_busy:")
        assert "stayed busy for 100ms" in (incoming.failure_reason or "")


def test_a_try_after_a_busy_deposit_waits_for_it(
    committed_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second try does not pass over the deposit another transaction still holds: it waits,
    and takes it as soon as that transaction ends (here 50 ms into the wait)."""
    incoming_id, trader_id = _one_order(committed_db)
    pauses: list[float] = []
    with _held(committed_db, trader_id) as holder:
        release = threading.Timer(0.05, holder.rollback)

        def pause(seconds: float) -> None:
            pauses.append(seconds)
            release.start()  # the other transaction ends while the next try waits

        monkeypatch.setattr(order_processor.time, "sleep", pause)
        started = time.perf_counter()
        result = process_incoming_order(incoming_id)
        elapsed = time.perf_counter() - started
        release.join()

    assert result.outcome == "assigned" and len(pauses) == 1
    assert elapsed >= 0.04  # it waited for the holder rather than trying a third time at once
    with committed_db() as session:
        incoming = session.get(IncomingOrder, incoming_id)
        assert incoming is not None
        assert (incoming.status, incoming.retry_count) == ("assigned", 0)


def _waiting_for_a_lock(session: Session) -> bool:
    return bool(
        session.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    )


def test_a_waiting_try_gives_way_to_a_transaction_that_waits_for_its_requisite(
    committed_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction that takes a trader's deposit and then its requisite (against the lock order
    of docs/architecture.md) and a try waiting for that deposit while holding that requisite
    would deadlock: the try gives up after `LOCK_WAIT`, long before PostgreSQL's deadlock
    detection (1 s) would abort either side, so the other transaction gets the requisite unharmed,
    and the order is assigned on the next try."""
    incoming_id, trader_id = _one_order(committed_db)
    with committed_db() as session:
        requisite_id = session.execute(
            text("SELECT id FROM req_traders WHERE trader_id = :t"), {"t": trader_id}
        ).scalar_one()
    first_try_over, holder_done = threading.Event(), threading.Event()

    def pause(_seconds: float) -> None:
        if first_try_over.is_set():
            holder_done.wait(10)  # the third try starts once the other transaction has ended
        first_try_over.set()

    monkeypatch.setattr(order_processor.time, "sleep", pause)
    results: list[object] = []
    with _held(committed_db, trader_id) as holder:
        worker = threading.Thread(
            target=lambda: results.append(process_incoming_order(incoming_id))
        )
        worker.start()
        assert first_try_over.wait(10)
        with committed_db() as observer:
            deadline = time.monotonic() + 5
            while not _waiting_for_a_lock(observer):  # the second try waits for the deposit
                assert time.monotonic() < deadline
                threading.Event().wait(0.005)  # `time.sleep` is the processor's pause here
        started = time.perf_counter()
        holder.execute(
            text("SELECT id FROM req_traders WHERE id = :r FOR UPDATE"), {"r": requisite_id}
        ).all()
        waited = time.perf_counter() - started
        holder.commit()
        holder_done.set()
    worker.join(10)

    assert waited < 0.9  # given up by the try after about LOCK_WAIT, not by deadlock detection
    [result] = results
    assert getattr(result, "outcome", None) == "assigned"
    with committed_db() as session:
        incoming = session.get(IncomingOrder, incoming_id)
        assert incoming is not None
        assert (incoming.status, incoming.retry_count) == ("assigned", 0)


def test_orders_of_a_batch_that_found_only_busy_deposits_get_their_own_tries(
    committed_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In `process_incoming_batch` (the workers' `orders.process_batch`) a busy deposit is lock
    timing too: the order is processed again on its own instead of spending a retry."""
    with committed_db() as session:
        ref, store, trader, _ = build_world(session)
        ids = [make_incoming(session, store, ref, amount_fiat=D("100.00")).id for _ in range(2)]
        trader_id = trader.id
        session.commit()
    pauses: list[float] = []
    with _held(committed_db, trader_id) as holder:

        def pause(seconds: float) -> None:
            pauses.append(seconds)
            holder.rollback()  # the other worker commits while the first order pauses

        monkeypatch.setattr(order_processor.time, "sleep", pause)
        results = order_processor.process_incoming_batch(ids)

    assert [r.outcome for r in results] == ["assigned", "assigned"]
    assert len(pauses) == 1
    with committed_db() as session:
        rows = session.scalars(
            select(IncomingOrder).where(IncomingOrder.id.in_(ids)).order_by(IncomingOrder.id)
        ).all()
        assert [(r.status, r.retry_count, r.failure_reason) for r in rows] == [
            ("assigned", 0, None),
            ("assigned", 0, None),
        ]
