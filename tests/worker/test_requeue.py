"""The sweepers re-send each due id at most once per interval, and stop at the first failed
publish (the chaos run: a backed-up queue got every due callback again on every sweep, and grew
faster than the workers drained it). Real Redis for the marks and the broker queue."""

from __future__ import annotations

from datetime import timedelta

import redis
from kombu.exceptions import OperationalError as BrokerDown
from sqlalchemy.orm import Session

from jivapay.config import get_settings
from jivapay.database.base import utcnow
from jivapay.utils.redis_client import namespace
from jivapay.worker.requeue import requeue
from tests.callback_receiver import free_port, make_world, new_delivery


def test_an_id_is_re_sent_once_per_interval(services: dict[str, str], unique: str) -> None:
    sent: list[int] = []

    assert requeue(unique, [1, 2, 3], sent.append, interval_seconds=60) == 3
    assert requeue(unique, [1, 2, 3, 4], sent.append, interval_seconds=60) == 1

    assert sent == [1, 2, 3, 4]
    client = redis.Redis.from_url(services["redis_url"])
    try:
        ttl = client.ttl(f"{namespace()}:requeued:{unique}:4")
    finally:
        client.close()
    assert 0 < ttl <= 60


def test_a_failed_publish_ends_the_sweep(services: dict[str, str], unique: str) -> None:
    sent: list[int] = []

    def send(item: int) -> None:
        if item == 2:
            raise BrokerDown("connection refused")
        sent.append(item)

    assert requeue(unique, [1, 2, 3], send, interval_seconds=60) == 1
    assert sent == [1]


def test_with_redis_unreachable_nothing_is_sent(services: dict[str, str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(get_settings(), "REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    sent: list[int] = []

    assert requeue("orders", [1, 2], sent.append, interval_seconds=60) == 0
    assert sent == []


def test_two_sweeps_send_a_due_delivery_once(db: Session, celery_worker, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    from jivapay.worker.app import celery_app
    from jivapay.worker.callback_tasks import sweep_due_callbacks

    world = make_world(db, "http://127.0.0.1:9/hook")
    delivery = new_delivery(db, world)
    delivery.next_attempt_at = utcnow() - timedelta(minutes=5)  # due, its message long lost
    db.flush()
    queue = celery_app.conf.task_default_queue  # this test's own (the fixture set it)

    first, second = sweep_due_callbacks(), sweep_due_callbacks()

    client = redis.Redis.from_url(celery_app.conf.broker_url)
    try:
        queued = client.llen(queue)
    finally:
        client.close()
    assert (first, second) == (1, 0)
    assert queued == 1
