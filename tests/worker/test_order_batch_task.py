"""`orders.process_batch`, the message `intake_dispatch` sends for intake orders that arrived
together: each order is assigned as `orders.process` would (`ASSIGNMENT_BATCH_SIZE` of them per
transaction), and each one that failed gets its own `orders.process` message after its backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from jivapay.database.models import IncomingOrder, OrderHistory
from jivapay.services import order_processor
from jivapay.task_queue import PUBLISH_ONCE
from jivapay.utils.config_loader import invalidate_cache, set_config_value
from jivapay.worker import tasks
from tests.factories import make_incoming
from tests.services.order_world import D, build_world


def test_a_batch_assigns_its_orders_and_schedules_each_failed_one_on_its_own(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, store, _, req = build_world(db)
    first = make_incoming(db, store, ref, amount_fiat=D("100.00"))
    too_big = make_incoming(db, store, ref, amount_fiat=D("5000000.00"))
    last = make_incoming(db, store, ref, amount_fiat=D("200.00"))
    db.flush()
    scheduled: list[tuple[list[int], float, dict[str, Any]]] = []

    def schedule(*, args: list[int], countdown: float, **options: Any) -> None:
        scheduled.append((args, countdown, options))

    monkeypatch.setattr(tasks.process_order, "apply_async", schedule)
    before = datetime.now(UTC)
    out = tasks.process_order_batch([first.id, too_big.id, last.id, first.id])  # one repeat

    assert [(r["incoming_order_id"], r["outcome"]) for r in out] == [
        (first.id, "assigned"),
        (too_big.id, "retrying"),
        (last.id, "assigned"),
    ]
    db.expire_all()
    for row in (first, last):
        order = db.get(
            OrderHistory, next(r["order_id"] for r in out if r["incoming_order_id"] == row.id)
        )
        assert order is not None and order.requisite_id == req.id
    retrying = db.get(IncomingOrder, too_big.id)
    assert retrying is not None and retrying.retry_count == 1
    assert [(args, options) for args, _, options in scheduled] == [([too_big.id], PUBLISH_ONCE)]
    assert retrying.next_attempt_at is not None
    due_in = (retrying.next_attempt_at - before).total_seconds()
    assert 0 < scheduled[0][1] <= due_in


def test_a_failed_retry_publish_leaves_the_batch_done(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, store, _, _ = build_world(db)
    too_big = make_incoming(db, store, ref, amount_fiat=D("5000000.00"))
    ok = make_incoming(db, store, ref, amount_fiat=D("100.00"))
    db.flush()

    def broker_down(**_: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.process_order, "apply_async", broker_down)
    out = tasks.process_order_batch([too_big.id, ok.id])
    assert [r["outcome"] for r in out] == ["retrying", "assigned"]  # the sweeper sends the retry


def _batches_seen(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    seen: list[list[int]] = []
    real = order_processor.process_incoming_batch

    def spy(ids: list[int], **kwargs: Any) -> Any:
        seen.append(list(ids))
        return real(ids, **kwargs)

    monkeypatch.setattr(order_processor, "process_incoming_batch", spy)
    return seen


def test_by_default_each_order_has_its_own_transaction(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, store, _, _ = build_world(db)
    ids = [make_incoming(db, store, ref, amount_fiat=D("100.00")).id for _ in range(3)]
    db.flush()
    batches = _batches_seen(monkeypatch)
    out = tasks.process_order_batch(ids)
    assert [r["outcome"] for r in out] == ["assigned"] * 3
    assert batches == []


def test_a_batch_size_assigns_that_many_orders_per_transaction(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, store, _, req = build_world(db)
    first = make_incoming(db, store, ref, amount_fiat=D("100.00"))
    too_big = make_incoming(db, store, ref, amount_fiat=D("5000000.00"))
    third = make_incoming(db, store, ref, amount_fiat=D("300.00"))
    last = make_incoming(db, store, ref, amount_fiat=D("400.00"))
    set_config_value(db, "ASSIGNMENT_BATCH_SIZE", 3)
    db.flush()
    invalidate_cache()
    batches = _batches_seen(monkeypatch)
    scheduled: list[list[int]] = []
    monkeypatch.setattr(
        tasks.process_order, "apply_async", lambda *, args, **_: scheduled.append(args)
    )

    out = tasks.process_order_batch([first.id, too_big.id, third.id, last.id, first.id])

    # Three in one transaction; the fourth, alone in its chunk, as `orders.process` would.
    assert batches == [[first.id, too_big.id, third.id]]
    assert [(r["incoming_order_id"], r["outcome"]) for r in out] == [
        (first.id, "assigned"),
        (too_big.id, "retrying"),
        (third.id, "assigned"),
        (last.id, "assigned"),
    ]
    assert scheduled == [[too_big.id]]
    db.expire_all()
    for r in out:
        if r["outcome"] == "assigned":
            order = db.get(OrderHistory, r["order_id"])
            assert order is not None and order.requisite_id == req.id
            assert order.incoming_order_id == r["incoming_order_id"]
