"""A requisite passed over only because another worker holds its trader's deposit row is lock
timing, not lack of money: the processor runs the main transaction again before the attempt counts
(`RequisiteBusy`), and only an order still blocked after `BUSY_ATTEMPTS` spends a retry.

Real sessions on PostgreSQL: a second connection holds the deposit row `FOR UPDATE` while the
processor works on its own connections."""

from __future__ import annotations

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


@contextmanager
def _deposit_held(factory: sessionmaker[Session], trader_id: int) -> Iterator[Session]:
    """Another worker's transaction holding the trader's deposit row, as during its assignment."""
    with factory() as holder:
        holder.execute(
            text("SELECT id FROM balance_traders WHERE trader_id = :t FOR UPDATE"), {"t": trader_id}
        ).all()
        yield holder
        holder.rollback()


def test_a_held_deposit_is_busy_and_a_short_deposit_is_not(
    committed_db: sessionmaker[Session],
) -> None:
    incoming_id, trader_id = _one_order(committed_db)
    with _deposit_held(committed_db, trader_id), committed_db() as session:
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
    with _deposit_held(committed_db, trader_id) as holder:

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
    with _deposit_held(committed_db, trader_id):
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
        assert (incoming.failure_reason or "").startswith("requisite_busy:")


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
    with _deposit_held(committed_db, trader_id) as holder:

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
