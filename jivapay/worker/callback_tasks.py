"""Celery tasks of merchant callbacks: `callbacks.deliver` (one attempt) and `callbacks.sweep_due`.

Thin, like every task here: an id in, one service call (`callback_service.deliver_callback`, which
owns its transactions). A failed attempt with a short wait re-sends itself with that countdown;
longer waits are left to the sweeper (beat, every 15 s), so no message sits in the broker for
hours. Duplicate or early messages are harmless: an attempt starts only for a pending, due,
unleased delivery.
"""

from __future__ import annotations

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


@celery_app.task(name=task_names.CALLBACKS_DELIVER, bind=True, acks_late=True, max_retries=None)
def deliver_callback_task(self: Any, delivery_id: int) -> dict[str, Any]:
    """Make one attempt at delivery `delivery_id`; schedule the next one if it is due soon."""
    from jivapay.enums import CallbackStatus
    from jivapay.services.callback_service import deliver_callback

    outcome = deliver_callback(delivery_id)
    if outcome.attempt is not None:  # an HTTP attempt was made (not skipped)
        CALLBACK_ATTEMPTS_TOTAL.labels(str(outcome.status)).inc()
    if outcome.status == CallbackStatus.PENDING and outcome.next_attempt_at is not None:
        delay = max((outcome.next_attempt_at - datetime.now(UTC)).total_seconds(), 0.0)
        if delay <= SELF_SCHEDULE_MAX_SECONDS:
            # `retry` re-sends to the queue the message came from; the database counts attempts.
            raise self.retry(countdown=delay, max_retries=None)
    return {
        "delivery_id": delivery_id,
        "status": outcome.status,
        "attempt": outcome.attempt,
        "status_code": outcome.status_code,
    }


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
