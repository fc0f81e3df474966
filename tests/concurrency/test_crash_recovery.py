"""Crash recovery: real Celery prefork workers process 1,000 orders while the test `kill -9`s pool
children and whole workers again and again; the sweeper (`sweepers.due_intake_orders`, called
here as beat would) re-enqueues whatever a dead worker left `new` or due for retry. In the end no
order is lost or assigned twice, every limit holds and reconciliation is clean."""

from __future__ import annotations

import os
import time
from decimal import Decimal as D
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from jivapay.database.base import utcnow
from jivapay.services.reconciliation import reconcile
from jivapay.services.sweepers import due_intake_orders
from tests.concurrency.workload import (
    BROKER_PREFIX_ENV,
    PROCESS_TASK,
    Workers,
    build_world,
    intake_status_counts,
    invariant_violations,
    set_settings,
)

ROOT = Path(__file__).resolve().parents[2]
KILLS = 8
KILL_EVERY = 0.7  # seconds
SWEEP_EVERY = 2.0
DEADLINE = 180.0


@pytest.mark.slow
def test_killed_workers_lose_no_order(
    committed_db: sessionmaker[Session], services: dict[str, str], unique: str, tmp_path: Path
) -> None:
    factory = committed_db
    set_settings(
        factory,
        MAX_ORDER_RETRIES=3,
        RETRY_DELAY_SECONDS=1,
        RETRY_BACKOFF_FACTOR=1,
        STUCK_ORDER_SECONDS=3,
    )
    # Half deposits: some orders cannot fit and must end `failed` after their retries.
    world = build_world(
        factory, small_orders=100, tight_orders=900, seed=4242, deposit_scale=D("0.5")
    )
    from jivapay.worker.tasks import process_order

    task_name = process_order.name
    assert task_name == PROCESS_TASK
    prefix, queue = f"jivapay-crash-{unique}:", f"crash-{unique}"
    env = {
        **os.environ,
        "DATABASE_URL": services["database_url"],
        "REDIS_URL": services["redis_url"],
        "CELERY_BROKER_URL": services["redis_url"],
        "CELERY_RESULT_BACKEND": services["redis_url"],
        BROKER_PREFIX_ENV: prefix,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    producer = Celery("crash-test-producer", broker=services["redis_url"], set_as_current=False)
    producer.conf.broker_transport_options = {"global_keyprefix": prefix}

    def enqueue(ids: list[int]) -> None:
        with producer.producer_or_acquire() as p:
            for incoming_id in ids:
                producer.send_task(task_name, args=[incoming_id], queue=queue, producer=p)

    def open_orders() -> int:
        with factory() as session:
            counts = intake_status_counts(session)
        return counts.get("new", 0) + counts.get("retrying", 0)

    # `celery` too: orders.process schedules its own retries on the default queue (namespaced by
    # the key prefix like everything else of this test).
    workers = Workers(env, f"{queue},celery", tmp_path, hostname=queue)
    kills = {"child": 0, "worker": 0}
    sweeps = re_enqueued = 0
    try:
        workers.start(0)
        workers.start(1)
        enqueue(world.incoming_ids)
        started = time.monotonic()
        last_sweep = started
        for n in range(KILLS):
            time.sleep(KILL_EVERY)
            slot = n % 2
            workers.wait_for_pool(slot)
            assert open_orders() > 0, "work finished before the kills: make the load larger"
            if n % 3 != 2:
                workers.kill_child(slot)
                kills["child"] += 1
            else:  # every third kill: the whole worker, master and pool at once
                workers.kill_worker(slot)
                workers.start(slot)
                kills["worker"] += 1
        # Recovery: what the dead workers held is still `new` (their transactions rolled back)
        # or `retrying`; the sweeper finds it in the database and enqueues it again.
        while open_orders() and time.monotonic() - started < DEADLINE:
            workers.revive()
            if time.monotonic() - last_sweep >= SWEEP_EVERY:
                ids = due_intake_orders(now=utcnow(), limit=300)
                enqueue(ids)
                sweeps, re_enqueued = sweeps + 1, re_enqueued + len(ids)
                last_sweep = time.monotonic()
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        assert open_orders() == 0, workers.log_tail()
    finally:
        workers.stop_all()
        producer.close()
        client = redis.Redis.from_url(services["redis_url"])
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    print(
        f"\ncrash test: task {task_name}, {elapsed:.1f} s, kills {kills}, "
        f"{sweeps} sweeps re-enqueued {re_enqueued} ids, {workers.restarts} masters restarted"
    )
    assert kills["child"] + kills["worker"] == KILLS and min(kills.values()) >= 2
    with factory() as session:
        counts = intake_status_counts(session)
        print(f"final intake statuses: {counts}")
        assert set(counts) <= {"assigned", "failed"} and sum(counts.values()) == 1000
        assert counts["assigned"] > 0 and counts.get("failed", 0) > 0
        assert invariant_violations(session) == {}
        assert reconcile(session) == []
