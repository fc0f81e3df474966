"""Status changes' callbacks leave through `callback_dispatch` after the commit (one Celery message
for a lone delivery, one `callbacks.deliver_batch` for deliveries committed together), and the
batch task attempts each delivery side by side against real HTTP receivers: a slow merchant holds
up no other, a failed attempt gets its own retry message, an attempt that raises leaves the others
delivered."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from jivapay import callback_dispatch, task_names
from jivapay.batch_dispatch import BatchDispatcher
from jivapay.database.models import CallbackDelivery
from jivapay.enums import CallbackStatus
from jivapay.services import callback_service
from jivapay.worker import callback_tasks
from tests.callback_receiver import Receiver, make_world, new_delivery

Sent = list[tuple[str, Any]]


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started = [Receiver().start() for _ in range(3)]
    yield started
    for receiver in started:
        receiver.stop()


def test_lone_and_grouped_deliveries_get_one_message_each(sent: Sent) -> None:
    callback_dispatch.publish_deliveries([7])
    callback_dispatch.publish_deliveries([8, 9])
    assert sent == [
        (task_names.CALLBACKS_DELIVER, 7),
        (task_names.CALLBACKS_DELIVER_BATCH, [8, 9]),
    ]


def test_a_status_change_reaches_the_broker_after_its_commit_and_never_after_a_rollback(
    db: Session, sent: Sent
) -> None:
    world = make_world(db, "http://127.0.0.1:9/hooks")
    delivery = new_delivery(db, world)
    assert callback_dispatch.dispatcher.flush(5)
    assert sent == []  # written, not committed: nothing announced
    db.commit()
    assert callback_dispatch.dispatcher.flush(5)
    assert sent == [(task_names.CALLBACKS_DELIVER, delivery.id)]

    new_delivery(db, world, status="canceled")
    db.rollback()
    assert callback_dispatch.dispatcher.flush(5)
    assert sent == [(task_names.CALLBACKS_DELIVER, delivery.id)]


def test_deliveries_committed_together_share_one_message(
    db: Session, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committing thread only hands the ids over: the dispatcher's thread publishes them, as
    one `callbacks.deliver_batch` message (a longer linger than the default keeps this test
    independent of the machine's speed)."""
    dispatcher = BatchDispatcher(callback_dispatch.publish_deliveries, linger_seconds=0.5)
    monkeypatch.setattr(callback_dispatch, "dispatcher", dispatcher)
    world = make_world(db, "http://127.0.0.1:9/hooks")
    ids = [new_delivery(db, world, status=s).id for s in ("pending", "completed", "failed")]
    db.commit()
    assert dispatcher.flush(5)
    assert sent == [(task_names.CALLBACKS_DELIVER_BATCH, ids)]


def _deliveries(committed_db: Any, receivers: list[Receiver]) -> list[int]:
    """A pending delivery per receiver, each of a store of its own, committed."""
    with committed_db() as session:
        ids = [new_delivery(session, make_world(session, r.url)).id for r in receivers]
        session.commit()
    return ids


def test_the_batch_task_attempts_its_deliveries_side_by_side(
    committed_db: Any, receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first delivery's send waits until another delivery's send has started: attempted one
    after the other, it would wait in vain and fail; side by side all three are delivered."""
    first = receivers[0]
    another_started = threading.Event()
    send = callback_service.callback_sender.send

    def send_first_after_another(url: str, *args: Any, **kwargs: Any) -> Any:
        if url == first.url:
            assert another_started.wait(10), "no other delivery was attempted meanwhile"
        else:
            another_started.set()
        return send(url, *args, **kwargs)

    monkeypatch.setattr(callback_service.callback_sender, "send", send_first_after_another)
    ids = _deliveries(committed_db, receivers)

    results = callback_tasks.deliver_callback_batch_task.apply(args=[ids]).get()

    assert [(r["delivery_id"], r["status"]) for r in results] == [(i, "delivered") for i in ids]
    assert [len(r.requests) for r in receivers] == [1, 1, 1]
    with committed_db() as session:
        assert {session.get(CallbackDelivery, i).status for i in ids} == {"delivered"}


def test_a_failed_attempt_in_a_batch_is_retried_on_its_own_message_and_a_crash_spares_the_others(
    committed_db: Any, receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    _ok, failing, crashing = receivers
    failing.script = [(503, {}, b"busy")]
    ids = _deliveries(committed_db, receivers)
    deliver = callback_service.deliver_callback

    def crash_on_the_third(delivery_id: int, **kwargs: Any) -> Any:
        if delivery_id == ids[2]:
            raise ConnectionError("database gone")
        return deliver(delivery_id, **kwargs)

    monkeypatch.setattr(callback_service, "deliver_callback", crash_on_the_third)
    retries: list[tuple[list[int], float]] = []
    monkeypatch.setattr(
        callback_tasks.deliver_callback_task,
        "apply_async",
        lambda args, countdown, **options: retries.append((args, countdown)),
    )

    results = callback_tasks.deliver_callback_batch_task.apply(args=[ids]).get()

    assert [r["status"] for r in results] == ["delivered", "pending", "error"]
    # The schedule's first wait, 5 s +-15%: short enough to ride on a message.
    assert [(args, 4 < countdown < 6) for args, countdown in retries] == [([ids[1]], True)]
    with committed_db() as session:
        assert session.get(CallbackDelivery, ids[1]).status == CallbackStatus.PENDING
        assert session.get(CallbackDelivery, ids[2]).attempt_count == 0  # left to the sweeper
    assert crashing.requests == []
