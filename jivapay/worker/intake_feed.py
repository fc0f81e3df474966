"""`jivapay intake-feed`: hands committed intake orders to the workers.

The API processes announce committed intake orders with a PostgreSQL `NOTIFY` sent after the
commit, the ids committed together in one notification (`intake_queue`); this process `LISTEN`s
on one connection and gives the ids to `intake_dispatch`, whose thread publishes them as Celery
messages, several per message when they arrive together. So the API processes never publish a
task on the intake path (that cost them about a fifth of their CPU per intake), and one process
per deployment does it for all of them, in larger batches.

Faults: an API process that died between its commit and its `NOTIFY` leaves a `new` row that the
sweeper re-sends. The connection lost (PostgreSQL restarted, a network cut) is opened again after
`retry_seconds`, and each (re)connection first hands over the `new` orders it may have missed
(`intake_queue.recent_new_order_ids`): those queued since `CATCH_UP_SECONDS` before the feed was
last known to be listening, or before it started. A duplicate is harmless but costs a worker a
message, so the window is short: a feed restarted within it (a crash, a deploy) misses nothing,
and orders of a longer outage wait for the `orders.sweep_due` sweeper (`STUCK_ORDER_SECONDS`):
slower, nothing lost. A broker refusing a publish is logged and reported
by `intake_dispatch`; the sweeper re-sends those orders too. Run one per deployment, like beat: a
second one only sends every order twice.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import psycopg
import structlog
from sqlalchemy import make_url

from jivapay.batch_dispatch import BatchDispatcher
from jivapay.config import get_settings
from jivapay.database.base import utcnow
from jivapay.database.engine import normalize_database_url
from jivapay.database.utils import read_session
from jivapay.services.intake_queue import CHANNEL, parse, recent_new_order_ids

log = structlog.get_logger(__name__)

CATCH_UP_SECONDS = 10  # also covers an intake's time between its `next_attempt_at` and its commit
CATCH_UP_LIMIT = 5000  # orders handed over at a (re)connection; older or more: the sweeper's
APPLICATION_NAME = "jivapay-intake-feed"  # how its connection shows in pg_stat_activity


def conninfo(database_url: str | None = None) -> str:
    """`DATABASE_URL` as libpq takes it (the SQLAlchemy driver name removed)."""
    url = make_url(normalize_database_url(database_url or get_settings().DATABASE_URL or ""))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def catch_up(dispatcher: BatchDispatcher, since: datetime) -> int:
    """Submit the `new` orders queued since `since`, which a listener that just connected may have
    missed."""
    with read_session() as session:
        ids = recent_new_order_ids(session, since=since, limit=CATCH_UP_LIMIT)
    for incoming_order_id in ids:
        dispatcher.submit(incoming_order_id)
    return len(ids)


def run(
    stop: threading.Event,
    dispatcher: BatchDispatcher,
    *,
    poll_seconds: float = 1.0,
    retry_seconds: float = 1.0,
    listening: threading.Event | None = None,
) -> None:
    """Listen and submit until `stop` is set. `listening` is set once each connection listens and
    has caught up (tests wait for it)."""
    window = timedelta(seconds=CATCH_UP_SECONDS)
    since = utcnow() - window
    while not stop.is_set():
        try:
            with psycopg.connect(
                conninfo(), autocommit=True, application_name=APPLICATION_NAME
            ) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                caught_up = catch_up(dispatcher, since)
                log.info("intake_feed_listening", caught_up=caught_up)
                if listening is not None:
                    listening.set()
                while not stop.is_set():
                    heard = 0
                    for note in conn.notifies(timeout=poll_seconds):
                        heard += 1
                        ids = parse(note.payload)
                        if ids is None:  # not ours: someone else's NOTIFY on the channel
                            log.warning("intake_feed_bad_payload", payload=note.payload[:64])
                        for incoming_order_id in ids or ():
                            dispatcher.submit(incoming_order_id)
                    if not heard:
                        conn.execute("SELECT 1")  # a silent channel or a dead server: find out
                    since = utcnow() - window  # everything committed before now was heard
        except Exception as exc:  # keep feeding: the next connection catches up
            if listening is not None:
                listening.clear()
            log.warning("intake_feed_disconnected", error=str(exc), retry_in=retry_seconds)
            stop.wait(retry_seconds)
