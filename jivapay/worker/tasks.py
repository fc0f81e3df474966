"""Celery tasks. Thin: ids in, one service call, the task owns the transaction.

`system.ping` answers `jivapay worker-ping` and touches the database, so a pong proves the worker
can reach both the broker and PostgreSQL. `system.heartbeat` is beat's proof of life.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import text

from jivapay.database.utils import atomic_transaction
from jivapay.worker.app import celery_app

log = structlog.get_logger(__name__)

BEAT_LAST_KEY = "jivapay:beat:last"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@celery_app.task(name="system.ping")
def ping() -> dict[str, Any]:
    """Answer a ping after a `SELECT 1` on the database."""
    with atomic_transaction() as session:
        session.execute(text("SELECT 1"))
    return {"pong": True, "at": _now(), "hostname": socket.gethostname()}


@celery_app.task(name="system.heartbeat")
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
