"""`jivapay worker --metrics-port`: a real prefork worker runs tasks and its scrape shows them.

The worker is a separate process tree (parent + 2 pool children) on this test's own queue; the
counters are summed across the children's multiprocess files by the parent's HTTP server.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jivapay.worker.app import celery_app
from jivapay.worker.metrics import STATE_METRIC_NAMES
from tests.callback_receiver import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def metrics_worker(services: dict[str, str], unique: str, tmp_path):  # type: ignore[no-untyped-def]
    """A prefork worker with a metrics port of its own; yields the function that scrapes it."""
    queue = f"jivapay-test-{unique}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    env = {
        **os.environ,
        "DATABASE_URL": services["database_url"],
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "CELERY_RESULT_BACKEND": celery_app.conf.result_backend,
        "CELERY_TASK_QUEUE": queue,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "-c", "import sys; from jivapay.cli import main; sys.exit(main())"]
    argv += ["worker", "--pool", "prefork", "--concurrency", "2", "--hostname", f"{unique}@%h"]
    # A port of its own: tests on other xdist workers run their own metrics worker meanwhile.
    port = free_port()
    argv += ["--metrics-port", str(port), "--metrics-addr", "127.0.0.1"]
    argv += ["--metrics-dir", str(tmp_path / "metrics")]
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _scrape(port)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        (tmp_path / "worker.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.5)
        yield functools.partial(_scrape, port)
    finally:
        celery_app.conf.task_default_queue = previous
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_task_and_business_counters_move_on_the_worker_scrape(metrics_worker: Any) -> None:
    from jivapay.worker.tasks import heartbeat, ping, process_order, reconcile_balances

    before = metrics_worker()
    assert _value(before, "celery_tasks_total", task="system.ping", state="SUCCESS") == 0

    for _ in range(4):
        ping.apply_async().get(timeout=30)
    heartbeat.apply_async().get(timeout=30)
    reconcile_balances.apply_async().get(timeout=60)
    # An id that does not exist: the processor leaves it alone (`skipped`), idempotently.
    process_order.apply_async(args=[987_654_321]).get(timeout=30)

    # A result is stored before the task's post-run signal counts it: wait for the last count.
    deadline = time.monotonic() + 30
    while True:
        after = metrics_worker()
        counted = (
            _value(after, "celery_tasks_total", task="system.ping", state="SUCCESS"),
            _value(after, "celery_tasks_total", task="maintenance.reconcile", state="SUCCESS"),
            _value(after, "jivapay_intake_orders_total", outcome="skipped"),
        )
        if counted == (4, 1, 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert _value(after, "celery_tasks_total", task="system.ping", state="SUCCESS") == 4
    assert (
        _value(after, "celery_task_duration_seconds_count", task="system.ping", state="SUCCESS")
        == 4
    )
    assert _value(after, "celery_tasks_total", task="maintenance.reconcile", state="SUCCESS") == 1
    assert _value(after, "jivapay_reconciliation_runs_total") == 1
    assert _value(after, "jivapay_reconciliation_discrepancies") == 0
    assert _value(after, "jivapay_intake_orders_total", outcome="skipped") == 1
    # Beat's heartbeat just ran: its age is seconds, not +Inf.
    assert 0 <= _value(after, "celery_beat_heartbeat_age_seconds") < 60
    # The state collector read both stores; the test queue is drained.
    assert _value(after, "jivapay_state_up", source="redis") == 1
    assert _value(after, "jivapay_state_up", source="database") == 1
    queue = celery_app.conf.task_default_queue
    assert ("celery_queue_length", (("queue", queue),)) in after
    assert _value(after, "jivapay_intake_orders_waiting", status="new") >= 0
    # Every documented state gauge that needs no rows is there (money and rates need balances).
    names = {name for name, _labels in after}
    need_rows = {
        "jivapay_held_money",
        "jivapay_platform_balance",
        "jivapay_exchange_rate_oldest_age_seconds",
    }
    for name in set(STATE_METRIC_NAMES) - need_rows:
        assert name in names, name


def test_a_retried_task_moves_the_retry_counter(committed_db, metrics_worker: Any) -> None:  # type: ignore[no-untyped-def]
    from jivapay.worker.tasks import process_order
    from tests.factories import make_incoming, make_reference, make_store

    with committed_db() as session:
        ref = make_reference(session)
        # No trader has a requisite for this currency: the attempt ends `retrying`, and the task
        # schedules its next try with `self.retry`.
        store = make_store(session, ref)
        incoming_id = make_incoming(session, store, ref).id
        session.commit()

    process_order.apply_async(args=[incoming_id])
    deadline = time.monotonic() + 60
    while True:
        after = metrics_worker()
        if _value(after, "celery_task_retries_total", task="orders.process") >= 1:
            break
        assert time.monotonic() < deadline, "the worker never retried the task"
        time.sleep(0.5)
    assert _value(after, "celery_task_retries_total", task="orders.process") == 1
    assert _value(after, "celery_tasks_total", task="orders.process", state="RETRY") == 1
    assert _value(after, "jivapay_intake_orders_total", outcome="retrying") == 1
