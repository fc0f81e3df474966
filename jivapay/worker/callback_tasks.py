"""Celery tasks of merchant callbacks: `callbacks.deliver` (one attempt), `callbacks.deliver_batch`
(one attempt at each of several deliveries, side by side) and `callbacks.sweep_due`.

Thin, like every task here: ids in, one service call per id (`callback_service.deliver_callback`,
which owns its transactions). A failed attempt with a short wait is sent again with that
countdown, on a message of its own; longer waits are left to the sweeper (beat, every 15 s), so no
message sits in the broker for hours. Duplicate or early messages are harmless: an attempt starts
only for a pending, due, unleased delivery.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from jivapay import task_names
from jivapay.utils.metrics import CALLBACK_ATTEMPTS_TOTAL
from jivapay.worker.app import celery_app

log = structlog.get_logger(__name__)

# Waits up to this long ride on a countdown message; longer ones are found by the sweeper.
SELF_SCHEDULE_MAX_SECONDS = 300.0
# The sweeper leaves alone deliveries that became due only just now: their message is on its way.
SWEEP_GRACE_SECONDS = 10.0
# A delivery the sweeper re-sent is not re-sent again for this long (its message may still be
# waiting in a backed-up queue; see `jivapay.worker.requeue`).
REQUEUE_INTERVAL_SECONDS = 60


# Deliveries of one `callbacks.deliver_batch` message attempted at a time, each in a thread of its
# own (and with a database connection of its own: under the pool's default size of 10).
BATCH_THREADS = 8


def _attempt(delivery_id: int) -> tuple[dict[str, Any], float | None]:
    """One attempt at `delivery_id`: its result, and the countdown of the next attempt when that
    one is due soon enough to ride on a message (None otherwise)."""
    from jivapay.enums import CallbackStatus
    from jivapay.services.callback_service import deliver_callback

    outcome = deliver_callback(delivery_id)
    if outcome.attempt is not None:  # an HTTP attempt was made (not skipped)
        CALLBACK_ATTEMPTS_TOTAL.labels(str(outcome.status)).inc()
    again: float | None = None
    if outcome.status == CallbackStatus.PENDING and outcome.next_attempt_at is not None:
        delay = max((outcome.next_attempt_at - datetime.now(UTC)).total_seconds(), 0.0)
        if delay <= SELF_SCHEDULE_MAX_SECONDS:
            again = delay
    result = {
        "delivery_id": delivery_id,
        "status": outcome.status,
        "attempt": outcome.attempt,
        "status_code": outcome.status_code,
    }
    return result, again


@celery_app.task(name=task_names.CALLBACKS_DELIVER, bind=True, acks_late=True, max_retries=None)
def deliver_callback_task(self: Any, delivery_id: int) -> dict[str, Any]:
    """Make one attempt at delivery `delivery_id`; schedule the next one if it is due soon."""
    result, again = _attempt(delivery_id)
    if again is not None:
        # `retry` re-sends to the queue the message came from; the database counts attempts.
        raise self.retry(countdown=again, max_retries=None)
    return result


@celery_app.task(name=task_names.CALLBACKS_DELIVER_BATCH, acks_late=True)
def deliver_callback_batch_task(delivery_ids: list[int]) -> list[dict[str, Any]]:
    """Make one attempt at each of `delivery_ids` (committed together, `callback_dispatch`), up to
    `BATCH_THREADS` at a time, so that a merchant who answers slowly holds up no other merchant's
    callback beyond the others' own time. A delivery whose next attempt is due soon gets a
    `callbacks.deliver` message with that countdown; one whose attempt failed outright (the
    database down) stays pending for the sweeper, and the others go on."""
    from jivapay.task_queue import PUBLISH_ONCE

    unique = list(dict.fromkeys(delivery_ids))
    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=min(len(unique), BATCH_THREADS) or 1) as pool:
        futures = [pool.submit(_attempt, delivery_id) for delivery_id in unique]
    for delivery_id, future in zip(unique, futures, strict=True):
        try:
            result, again = future.result()
        except Exception as exc:  # the sweeper re-sends what is still pending
            log.warning("callback_attempt_failed", delivery_id=delivery_id, error=repr(exc))
            results.append({"delivery_id": delivery_id, "status": "error"})
            continue
        results.append(result)
        if again is not None:
            try:
                deliver_callback_task.apply_async(
                    args=[delivery_id], countdown=again, **PUBLISH_ONCE
                )
            except Exception as exc:  # the sweeper sends due attempts: never fail the batch
                log.warning(
                    "callback_retry_publish_failed", delivery_id=delivery_id, error=str(exc)
                )
    return results


@celery_app.task(name=task_names.CALLBACKS_SWEEP_DUE)
def sweep_due_callbacks() -> int:
    """Enqueue pending deliveries that are due (lost messages, crashed attempts, long waits)."""
    from jivapay.database.utils import read_session
    from jivapay.services.callback_service import due_delivery_ids
    from jivapay.task_queue import PUBLISH_ONCE
    from jivapay.worker.requeue import requeue

    with read_session() as session:
        ids = due_delivery_ids(
            session, now=datetime.now(UTC) - timedelta(seconds=SWEEP_GRACE_SECONDS)
        )
    sent = requeue(
        "callbacks",
        ids,
        lambda delivery_id: deliver_callback_task.apply_async(args=[delivery_id], **PUBLISH_ONCE),
        interval_seconds=REQUEUE_INTERVAL_SECONDS,
    )
    if sent:
        log.info("callbacks_requeued", count=sent, due=len(ids))
    return sent
