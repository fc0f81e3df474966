"""Worker metrics: Celery task signals, the scrape-time state collector, `--metrics-port` serving.

Prefork-safe: `jivapay.utils.metrics_setup.enable_multiprocess` (called by `jivapay worker --metrics-port N` before anything
creates a metric) points prometheus_client at a fresh `PROMETHEUS_MULTIPROC_DIR`, so each pool child
writes its own memory-mapped file and the parent's HTTP server sums them. Task counters come from
Celery's signals in the child that ran the task. The state gauges (queue depth, beat heartbeat age,
held money, stale exchange rates, intake orders waiting) are read from Redis and PostgreSQL when
Prometheus scrapes, with a short statement timeout, never holding a lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import structlog
from celery.signals import task_postrun, task_prerun, task_retry, worker_process_shutdown
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jivapay.utils import metrics

log = structlog.get_logger(__name__)

_STATEMENT_TIMEOUT_MS = 2000
_started: dict[str, float] = {}

# Every family the state collector yields (dashboards and alerts are checked against these).
STATE_METRIC_NAMES = (
    "jivapay_state_up",
    "celery_queue_length",
    "celery_beat_heartbeat_age_seconds",
    "jivapay_held_money",
    "jivapay_platform_balance",
    "jivapay_exchange_rate_oldest_age_seconds",
    "jivapay_intake_orders_waiting",
    "jivapay_intake_oldest_waiting_age_seconds",
)


def build_registry() -> CollectorRegistry:
    """The registry a worker scrape reads: every pool process's counters plus the state gauges."""
    registry = metrics.collecting_registry()
    if registry is metrics.REGISTRY:
        registry = CollectorRegistry()
        for collector in list(metrics.REGISTRY._collector_to_names):
            registry.register(collector)
    registry.register(StateCollector())
    return registry


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped in-cluster
    """Serve `/metrics` on `addr:port` from a thread of the worker's main process."""
    start_http_server(port, addr=addr, registry=build_registry())
    log.info("worker_metrics_serving", port=port)


# --------------------------------------------------------------------------- Celery signals


@task_prerun.connect
def _on_task_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _on_task_postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    name = getattr(task, "name", None) or "unknown"
    final = state or "UNKNOWN"
    metrics.CELERY_TASKS_TOTAL.labels(name, final).inc()
    started = _started.pop(task_id, None) if task_id else None
    if started is not None:
        metrics.CELERY_TASK_DURATION_SECONDS.labels(name, final).observe(
            time.perf_counter() - started
        )


@task_retry.connect
def _on_task_retry(sender: Any = None, **_: Any) -> None:
    metrics.CELERY_TASK_RETRIES_TOTAL.labels(getattr(sender, "name", None) or "unknown").inc()


@worker_process_shutdown.connect
def _on_worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if metrics.multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


# --------------------------------------------------------------------------- state at scrape time


class StateCollector(Collector):
    """Gauges read from Redis and PostgreSQL at scrape time (`jivapay_state_up` 0 when they fail)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "jivapay_state_up", "1 when the scrape read Redis and PostgreSQL.", labels=["source"]
        )
        try:
            yield from _redis_state()
            up.add_metric(["redis"], 1)
        except Exception as exc:
            log.warning("metrics_redis_state_failed", error=str(exc))
            up.add_metric(["redis"], 0)
        try:
            yield from _database_state()
            up.add_metric(["database"], 1)
        except Exception as exc:
            log.warning("metrics_database_state_failed", error=str(exc))
            up.add_metric(["database"], 0)
        yield up


def _redis_state() -> Iterator[GaugeMetricFamily]:
    import redis

    from jivapay.config import get_settings
    from jivapay.worker.tasks import BEAT_LAST_KEY

    settings = get_settings()
    url = settings.celery_broker_url or settings.REDIS_URL
    if not url:
        raise RuntimeError("no broker configured")
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        queue = settings.CELERY_TASK_QUEUE
        depth = GaugeMetricFamily(
            "celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        depth.add_metric([queue], float(client.llen(queue)))
        yield depth
    finally:
        client.close()
    # The heartbeat task writes to REDIS_URL, which may be another server or database than the broker.
    beat = redis.Redis.from_url(
        settings.REDIS_URL or url, socket_timeout=2, socket_connect_timeout=2
    )
    try:
        raw = beat.get(BEAT_LAST_KEY)
    finally:
        beat.close()
    age = float("inf")
    if raw:
        last = datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))
        age = max((datetime.now(UTC) - last).total_seconds(), 0.0)
    yield GaugeMetricFamily(
        "celery_beat_heartbeat_age_seconds",
        "Seconds since beat's last `system.heartbeat` ran (+Inf when never).",
        value=age,
    )


_HELD = """
SELECT c.code, 'store' AS account, COALESCE(SUM(b.frozen), 0) FROM balance_stores b
  JOIN crypto_currencies c ON c.id = b.crypto_currency_id GROUP BY c.code
UNION ALL
SELECT c.code, 'trader', COALESCE(SUM(b.frozen), 0) FROM balance_traders b
  JOIN crypto_currencies c ON c.id = b.crypto_currency_id GROUP BY c.code
"""
_PLATFORM = """
SELECT c.code, p.balance FROM balance_platform p JOIN crypto_currencies c ON c.id = p.crypto_currency_id
"""
_OLDEST_RATE = "SELECT EXTRACT(EPOCH FROM now() - MIN(updated_at)) FROM exchange_rates"
_WAITING = """
SELECT status, COUNT(*), COALESCE(EXTRACT(EPOCH FROM now() - MIN(created_at)), 0)
FROM incoming_orders WHERE status IN ('new', 'retrying') GROUP BY status
"""


def _database_state() -> Iterator[GaugeMetricFamily]:
    from sqlalchemy import text

    from jivapay.database.utils import read_session

    with read_session() as session:
        session.execute(text(f"SET LOCAL statement_timeout = {_STATEMENT_TIMEOUT_MS}"))
        held_rows = session.execute(text(_HELD)).all()
        platform_rows = session.execute(text(_PLATFORM)).all()
        oldest_rate = session.execute(text(_OLDEST_RATE)).scalar()
        waiting_rows = session.execute(text(_WAITING)).all()
        session.rollback()
    held = GaugeMetricFamily(
        "jivapay_held_money",
        "Money frozen by open holds, by crypto currency and account kind.",
        labels=["currency", "account"],
    )
    for code, account, amount in held_rows:
        held.add_metric([code, account], float(amount))
    yield held
    platform = GaugeMetricFamily(
        "jivapay_platform_balance",
        "The platform's profit balance, by crypto currency.",
        labels=["currency"],
    )
    for code, amount in platform_rows:
        platform.add_metric([code], float(amount))
    yield platform
    if oldest_rate is not None:
        yield GaugeMetricFamily(
            "jivapay_exchange_rate_oldest_age_seconds",
            "Age of the least recently updated exchange rate.",
            value=float(oldest_rate),
        )
    waiting = GaugeMetricFamily(
        "jivapay_intake_orders_waiting",
        "Intake orders not yet assigned, by status.",
        labels=["status"],
    )
    oldest = GaugeMetricFamily(
        "jivapay_intake_oldest_waiting_age_seconds",
        "Age of the oldest intake order not yet assigned, by status.",
        labels=["status"],
    )
    seen = {str(status): (count, age) for status, count, age in waiting_rows}
    for status in ("new", "retrying"):
        count, age = seen.get(status, (0, 0))
        waiting.add_metric([status], float(count))
        oldest.add_metric([status], float(age))
    yield waiting
    yield oldest
