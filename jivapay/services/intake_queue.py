"""How a committed intake order reaches the workers: a PostgreSQL `NOTIFY` on `CHANNEL`.

The intake's own INSERT announces its row (`pg_notify` in the statement's RETURNING, so no extra
round trip) and a release from manual review announces the order with one statement. PostgreSQL
delivers a notification only when its transaction commits and drops it on rollback: a refused
intake is never announced, a committed one needs no after-commit hook, and the API process never
talks to the broker on this path. `jivapay intake-feed` (`worker.intake_feed`) listens and
publishes the Celery messages.

The database stays the queue. Whatever no listener heard (the feed down, restarting or
reconnecting) is a `new` row: the feed hands the recent ones over when it (re)connects
(`recent_new_order_ids`), and the `orders.sweep_due` sweeper re-sends older ones after
`STUCK_ORDER_SECONDS`. An order announced twice is harmless: a worker processes only a `new` row it
locks, once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Text, cast, func, select
from sqlalchemy.orm import Session

from jivapay.database.models import IncomingOrder
from jivapay.enums import IncomingOrderStatus

CHANNEL = "jivapay_intake"  # a plain identifier: LISTEN takes it unquoted


def announcement(incoming_order_id: ColumnElement[int]) -> ColumnElement[None]:
    """`pg_notify` of an intake order id, for the RETURNING clause of the statement that writes it."""
    return func.pg_notify(CHANNEL, cast(incoming_order_id, Text))


def announce(session: Session, incoming_order_id: int) -> None:
    """Announce `incoming_order_id` to the workers when `session`'s transaction commits."""
    session.execute(select(func.pg_notify(CHANNEL, str(incoming_order_id))))


def recent_new_order_ids(session: Session, *, since: datetime, limit: int) -> list[int]:
    """`new` intake orders queued at or after `since`, oldest first: what a listener that just
    (re)connected may have missed (older ones are the sweeper's)."""
    stmt = (
        select(IncomingOrder.id)
        .where(
            IncomingOrder.status == IncomingOrderStatus.NEW.value,
            IncomingOrder.next_attempt_at >= since,
        )
        .order_by(IncomingOrder.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))
