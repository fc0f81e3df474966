"""Celery tasks. Thin: ids in, one service call, the task owns the transaction.

`system.ping` answers `jivapay worker-ping` and touches the database, so a pong proves the worker
can reach both the broker and PostgreSQL. `system.heartbeat` is beat's proof of life.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from jivapay import task_names
from jivapay.database.utils import atomic_transaction
from jivapay.utils.metrics import (
    INTAKE_ORDERS_TOTAL,
    RECONCILIATION_DISCREPANCIES,
    RECONCILIATION_RUNS_TOTAL,
)
from jivapay.worker.app import celery_app

if TYPE_CHECKING:
    from jivapay.services.order_processor import ProcessResult

log = structlog.get_logger(__name__)

BEAT_LAST_KEY = "jivapay:beat:last"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@celery_app.task(name=task_names.SYSTEM_PING)
def ping() -> dict[str, Any]:
    """Answer a ping after a `SELECT 1` on the database."""
    with atomic_transaction() as session:
        session.execute(text("SELECT 1"))
    return {"pong": True, "at": _now(), "hostname": socket.gethostname()}


@celery_app.task(name=task_names.SYSTEM_HEARTBEAT)
def heartbeat() -> str:
    """Record beat's last tick in Redis (`jivapay:beat:last`) and log it."""
    import redis

    from jivapay.config import get_settings

    at = _now()
    url = get_settings().REDIS_URL
    if url:
        client = redis.Redis.from_url(url)
        try:
            client.set(BEAT_LAST_KEY, at)
        finally:
            client.close()
    log.info("beat_heartbeat", at=at)
    return at


# --------------------------------------------------------------------------- orders


def _assign(incoming_order_id: int) -> tuple[ProcessResult, float | None]:
    """One assignment attempt, counted; with the seconds until its retry when it failed for now."""
    from jivapay.services.order_processor import process_incoming_order

    return _counted(process_incoming_order(incoming_order_id))


def _counted(result: ProcessResult) -> tuple[ProcessResult, float | None]:
    """Count an attempt's outcome; with the seconds until its retry when it failed for now."""
    from jivapay.enums import IncomingOrderStatus

    INTAKE_ORDERS_TOTAL.labels(result.outcome).inc()
    if result.outcome != IncomingOrderStatus.RETRYING or result.next_attempt_at is None:
        return result, None
    return result, max((result.next_attempt_at - datetime.now(UTC)).total_seconds(), 0.0)


@celery_app.task(name=task_names.ORDERS_PROCESS, bind=True, acks_late=True, max_retries=None)
def process_order(self: Any, incoming_order_id: int) -> dict[str, Any]:
    """Assign one intake order; a failed attempt is retried after the backoff from the settings.

    Idempotent: the processor leaves alone an order that is no longer open or not yet due, so a
    redelivered or duplicated message changes nothing. The attempt count and the decision to fail
    live in the database (`MAX_ORDER_RETRIES`); the countdown here only schedules the next try, and
    the `orders.sweep_due` sweeper re-sends whatever a lost message or a dead worker dropped.
    """
    result, retry_in = _assign(incoming_order_id)
    if retry_in is not None:
        # `retry` re-sends to the queue the message came from; the database counts the attempts.
        raise self.retry(countdown=retry_in, max_retries=None)
    return {"outcome": result.outcome, "order_id": result.order_id, "reason": result.reason}


@celery_app.task(name=task_names.ORDERS_PROCESS_BATCH, acks_late=True)
def process_order_batch(incoming_order_ids: list[int]) -> list[dict[str, Any]]:
    """Assign intake orders that arrived together, `ASSIGNMENT_BATCH_SIZE` per transaction.

    Sent by `intake_dispatch` for a burst of intake: one message instead of one per order. At the
    default size, 1, each order is assigned in its own transaction exactly as `orders.process` does;
    above it, `process_incoming_batch` assigns that many per transaction, paying the claim and the
    commit once (docs/performance.md, "Batches": +40% assignments/s with 100 traders), but keeps
    every requisite and deposit it took locked until it commits, so with few traders the other
    workers mostly wait for them (-20% with 2 traders). An order whose attempt failed is scheduled
    again on its own `orders.process` message after its backoff (the sweeper re-sends it if that
    message is lost). A redelivered batch is harmless: orders already assigned are skipped.
    """
    from jivapay.services.order_processor import process_incoming_batch
    from jivapay.task_queue import PUBLISH_ONCE
    from jivapay.utils.config_loader import standalone_runtime_settings

    unique = list(dict.fromkeys(incoming_order_ids))
    size = max(standalone_runtime_settings().ASSIGNMENT_BATCH_SIZE, 1)
    attempts: list[tuple[ProcessResult, float | None]] = []
    for start in range(0, len(unique), size):
        chunk = unique[start : start + size]
        if len(chunk) == 1:
            attempts.append(_assign(chunk[0]))
        else:
            attempts.extend(_counted(result) for result in process_incoming_batch(chunk))
    results = []
    for result, retry_in in attempts:
        results.append(result)
        if retry_in is not None:
            incoming_order_id = result.incoming_order_id
            try:
                process_order.apply_async(
                    args=[incoming_order_id], countdown=retry_in, **PUBLISH_ONCE
                )
            except Exception as exc:  # the sweeper sends due retries: never fail the batch
                log.warning(
                    "order_retry_publish_failed",
                    incoming_order_id=incoming_order_id,
                    error=str(exc),
                )
    return [
        {
            "incoming_order_id": r.incoming_order_id,
            "outcome": r.outcome,
            "order_id": r.order_id,
            "reason": r.reason,
        }
        for r in results
    ]


@celery_app.task(name=task_names.ORDERS_SWEEP_DUE)
def sweep_due_orders() -> int:
    """Re-send due retries and `new` orders whose message was lost; returns how many."""
    from jivapay.database.utils import read_session
    from jivapay.services.sweepers import due_intake_orders
    from jivapay.task_queue import PUBLISH_ONCE
    from jivapay.utils.config_loader import runtime_settings
    from jivapay.worker.requeue import requeue

    ids = due_intake_orders(now=datetime.now(UTC))
    if not ids:
        return 0
    with read_session() as session:
        # A `new` order counts as lost after STUCK_ORDER_SECONDS: re-send each at most that often.
        interval = runtime_settings(session).STUCK_ORDER_SECONDS
    sent = requeue(
        "orders",
        ids,
        lambda incoming_order_id: process_order.apply_async(
            args=[incoming_order_id], **PUBLISH_ONCE
        ),
        interval_seconds=interval,
    )
    if sent:
        log.info("orders_requeued", count=sent, due=len(ids))
    return sent


@celery_app.task(name=task_names.ORDERS_EXPIRE_OVERDUE)
def expire_overdue_orders() -> int:
    """Expire pending orders past their payment deadline (holds released)."""
    from jivapay.services.sweepers import expire_overdue_orders as expire

    return expire(now=datetime.now(UTC))


@celery_app.task(name=task_names.ORDERS_ESCALATE_UNCONFIRMED)
def escalate_unconfirmed_orders() -> int:
    """Turn paid orders the trader did not confirm in time into disputes."""
    from jivapay.services.sweepers import escalate_unconfirmed_orders as escalate

    return escalate(now=datetime.now(UTC))


@celery_app.task(name=task_names.MAINTENANCE_PRUNE_TURNOVER)
def prune_turnover() -> int:
    """Delete turnover buckets no limit window can reach any more."""
    from jivapay.services.sweepers import prune_turnover_buckets

    return prune_turnover_buckets(now=datetime.now(UTC))


@celery_app.task(name=task_names.GATEWAY_CLEANUP_IDEMPOTENCY_KEYS)
def cleanup_idempotency_keys() -> int:
    """Delete gateway idempotency keys older than their time to live."""
    from jivapay.services.idempotency import delete_expired_keys

    with atomic_transaction() as session:
        return delete_expired_keys(session, now=datetime.now(UTC))


@celery_app.task(name=task_names.MAINTENANCE_RECONCILE)
def reconcile_balances() -> int:
    """Check every money invariant; each discrepancy is reported as a critical error."""
    from jivapay.services.sweepers import run_reconciliation

    found = len(run_reconciliation())
    RECONCILIATION_DISCREPANCIES.set(found)
    RECONCILIATION_RUNS_TOTAL.inc()
    return found
