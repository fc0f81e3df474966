"""Deterministic race orchestration: wait until another session of this database is waiting for a
lock (seen in `pg_stat_activity`), so a test commits its first actor only once the second is
blocked behind it, instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND query ILIKE :query"
)


def wait_for_a_lock_wait(
    connect: Callable[[], Session | Connection],
    *,
    query_like: str = "%",
    timeout: float = 20.0,
    what: str = "no session ever waited for the lock",
) -> None:
    """Return once a session whose query matches `query_like` waits for a lock; `AssertionError`
    with `what` after `timeout` seconds. `connect` opens a probe (a session factory or
    `engine.connect`), closed after each look."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect() as probe:
            if probe.execute(text(_WAITING), {"query": query_like}).scalar():
                return
        time.sleep(0.05)
    raise AssertionError(what)
