"""How a committed intake order reaches the workers: a PostgreSQL `NOTIFY` on `CHANNEL`, sent
after the commit.

`announce(session, id)` (the gateway's intake, a release from manual review) queues the id on the
session; once the transaction commits, the process's `announcer` thread sends one
`NOTIFY jivapay_intake, '<id>,<id>,...'` for the ids committed together, in autocommit on a
connection of its own that it keeps. A rolled-back transaction announces nothing. `jivapay intake-feed`
(`worker.intake_feed`) listens and publishes the Celery messages; the API process never talks to
the broker on this path.

Why after the commit and not inside the writing transaction (where PostgreSQL would deliver it on
commit by itself): a transaction that has issued `NOTIFY` takes one database-wide lock at commit
and holds it through its WAL flush, so every intake would commit one after the other. Measured
with pgbench on this project's machine (INSERT and commit, 16 and 32 clients): 5,800 and 4,800
commits/s with the `NOTIFY` inside the transaction against 12,700 and 12,800 without; with the
`NOTIFY` sent after the commit, 10,800 and 11,200 (a transaction that only notifies writes no WAL
and holds the lock for microseconds). On a disk whose flush takes a millisecond the serialised
commit would cap intake near 1,000 orders/s for the whole deployment, however many gateways run.

The database stays the queue. Whatever no listener heard (the process died between its commit and
the `NOTIFY`, the feed down, restarting or reconnecting) is a `new` row: the feed hands the recent
ones over when it (re)connects (`recent_new_order_ids`), and the `orders.sweep_due` sweeper
re-sends older ones after `STUCK_ORDER_SECONDS`. An order announced twice is harmless: a worker
processes only a `new` row it locks, once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from datetime import datetime

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from jivapay.batch_dispatch import BatchDispatcher
from jivapay.database.engine import get_engine
from jivapay.database.models import IncomingOrder
from jivapay.database.utils import call_after_commit
from jivapay.enums import IncomingOrderStatus

CHANNEL = "jivapay_intake"  # a plain identifier: LISTEN takes it unquoted
# A NOTIFY payload holds under 8,000 bytes: 200 ids of up to 19 digits and a comma fit in 4,000.
MAX_IDS_PER_NOTIFY = 200
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :payload)")


class _Notifier:
    """Sends `NOTIFY`s on one autocommit connection it keeps (the announcer's thread is its only
    user): a pooled checkout per send would add a ping and cost 2.5 times the CPU (measured, 150
    against 60 us). A connection that fails is dropped and the send tried once on a new one."""

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._pid = os.getpid()

    def __call__(self, incoming_order_ids: list[int]) -> None:
        """Send one `NOTIFY` carrying `incoming_order_ids` (committed `new` orders)."""
        parameters = {"payload": ",".join(str(i) for i in incoming_order_ids)}
        try:
            self._connection().execute(_NOTIFY, parameters)
        except DBAPIError:
            self.close()
            self._connection().execute(_NOTIFY, parameters)

    def _connection(self) -> Connection:
        engine = get_engine()
        if self._pid != os.getpid():  # a forked child never uses its parent's socket
            self._conn, self._pid = None, os.getpid()
        if self._conn is not None and self._conn.engine is not engine:
            self.close()
        if self._conn is None:
            self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()


notify = _Notifier()


def parse(payload: str) -> list[int] | None:
    """The order ids of a notification on `CHANNEL`; None when it is not ours."""
    parts = payload.split(",")
    if not all(part.isdigit() for part in parts):
        return None
    return [int(part) for part in parts]


# A few milliseconds of linger let the ids of concurrent requests share one statement (measured:
# bench/intake.py, docs/performance.md); a lone order still goes out after them.
LINGER_SECONDS = 0.01
announcer = BatchDispatcher(
    notify, max_batch=MAX_IDS_PER_NOTIFY, linger_seconds=LINGER_SECONDS, name="intake-announcer"
)
atexit.register(announcer.flush, 2.0)


def announce(session: Session, incoming_order_id: int) -> None:
    """Announce `incoming_order_id` to the workers once `session`'s transaction commits."""
    call_after_commit(
        session, lambda: announcer.submit(incoming_order_id), label="intake_announcement"
    )


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
