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


@pytest.mark.parametrize("batch_size", [None, 2])
def test_a_batch_assigns_its_orders_and_schedules_each_failed_one_on_its_own(
    db: Session, monkeypatch: pytest.MonkeyPatch, batch_size: int | None
) -> None:
    """By default each order has its own transaction; with `ASSIGNMENT_BATCH_SIZE` = 2 the first
    two share one (`process_incoming_batch`) and the third, alone in its chunk, has its own."""
    ref, store, _, req = build_world(db)
    first = make_incoming(db, store, ref, amount_fiat=D("100.00"))
    too_big = make_incoming(db, store, ref, amount_fiat=D("5000000.00"))
    last = make_incoming(db, store, ref, amount_fiat=D("200.00"))
    if batch_size is not None:
        set_config_value(db, "ASSIGNMENT_BATCH_SIZE", batch_size)
    db.flush()
    invalidate_cache()
    batches: list[list[int]] = []
    real_batch = order_processor.process_incoming_batch

    def batch(ids: list[int], **kwargs: Any) -> Any:
        batches.append(list(ids))
        return real_batch(ids, **kwargs)

    monkeypatch.setattr(order_processor, "process_incoming_batch", batch)
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
    assert batches == ([] if batch_size is None else [[first.id, too_big.id]])
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
