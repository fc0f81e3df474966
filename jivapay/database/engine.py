"""The process's SQLAlchemy engine and session factory: created lazily, one per process.

A pooled connection is checked with a ping before use only when it sat idle in the pool for
`DB_PING_IDLE_SECONDS` (`ping_idle_connections`): connections that drop while idle (a restarted
server, an idle timeout, a proxy or firewall) are replaced before a request sees them, and a busy
process, whose connections come back within milliseconds, pays no round trip per checkout.

Celery worker processes call `dispose_engine()` after forking so no connection crosses a fork.
Tests rebind the session factory to a connection held in an outer transaction (`bind_session_factory`)
so every session a test opens, in any layer, rolls back with it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from psycopg import _queries as psycopg_queries
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from jivapay.config import get_settings
from jivapay.utils.exceptions import ConfigurationError

# psycopg turns a query's `%(name)s` placeholders into `$n` by parsing its text, and caches the
# result per text only for texts of at most 4,096 bytes with at most 50 parameters (a guard for
# ORMs that generate ever-new texts): a longer statement is parsed again on every execution. The
# assignment's one write statement is over 5,000 bytes with over 60 parameters, and re-parsing it
# cost 0.2 ms of a worker's CPU per assignment (docs/performance.md). This code base executes a
# fixed set of statements, so the limits are raised for all of them; the cache stays psycopg's LRU
# of 128 texts, and a statement above these limits is still parsed each time, as before.
QUERY_CACHE_MAX_BYTES = 16_384
QUERY_CACHE_MAX_PARAMETERS = 128


def cache_long_statements() -> None:
    """Let psycopg cache the conversion of statements up to `QUERY_CACHE_MAX_BYTES` and
    `QUERY_CACHE_MAX_PARAMETERS` (called on import; a test checks psycopg still reads them)."""
    psycopg_queries.MAX_CACHED_STATEMENT_LENGTH = max(
        psycopg_queries.MAX_CACHED_STATEMENT_LENGTH, QUERY_CACHE_MAX_BYTES
    )
    psycopg_queries.MAX_CACHED_STATEMENT_PARAMS = max(
        psycopg_queries.MAX_CACHED_STATEMENT_PARAMS, QUERY_CACHE_MAX_PARAMETERS
    )


cache_long_statements()

_lock = threading.RLock()  # get_session_factory() calls get_engine() while holding it
_engine: Engine | None = None
_session_factory: sessionmaker[Session] | None = None


def normalize_database_url(url: str) -> str:
    """Use the psycopg 3 driver whatever scheme the operator wrote."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str | None = None, **kwargs: object) -> Engine:
    """A new engine for `url` (or `DATABASE_URL`), with the pool settings of this deployment."""
    settings = get_settings()
    url = url or settings.DATABASE_URL
    if not url:
        raise ConfigurationError(
            "DATABASE_URL is not set: export it, or run `jivapay up` for the embedded database"
        )
    ping_idle = settings.DB_PING_IDLE_SECONDS
    options: dict[str, object] = {
        # 0: SQLAlchemy's ping on every checkout; else `ping_idle_connections` below.
        "pool_pre_ping": ping_idle == 0,
        "pool_size": settings.DB_POOL_SIZE,
        "max_overflow": settings.DB_MAX_OVERFLOW,
        # See _reset_on_return: roll back only connections that are inside a transaction.
        "pool_reset_on_return": None,
        # Errors and logs never carry bound values (e-mails, names, encrypted card numbers).
        "hide_parameters": True,
    }
    options.update(kwargs)
    engine = create_engine(normalize_database_url(url), **options)
    if options["pool_reset_on_return"] is None:
        event.listen(engine, "reset", _reset_on_return)
    if not options["pool_pre_ping"]:
        ping_idle_connections(engine, ping_idle)
    return engine


_IDLE_SINCE = "jivapay_idle_since"


def ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection on checkout when it was returned more than `idle_seconds` ago.

    The pool's own `pre_ping` pings on every checkout: per API request a round trip, about
    0.04 ms of PostgreSQL's CPU and 4% of the process's (docs/performance.md, "A ping per
    request"). What it guards against is a connection that died while it sat in the pool; one
    returned a moment ago was alive then. A server that goes away under a busy process makes a
    statement fail with a disconnect error, and SQLAlchemy then invalidates every connection the
    pool opened before it, so the requests after it reconnect instead of finding dead
    connections. A failed ping raises `InvalidatePoolError`, on which the pool does the same and
    retries the checkout on a new connection, as `pre_ping` does. The record's `info` is cleared
    when its connection closes, so a new connection is not pinged on its first checkout."""

    def stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError(str(error)) from error
            raise

    event.listen(engine, "checkin", stamp)
    event.listen(engine, "checkout", ping_if_idle)


def _reset_on_return(dbapi_connection: Any, record: Any, state: Any) -> None:
    """Roll back a returned connection only if a transaction is still open.

    The pool's default resets every returned connection with ROLLBACK, and psycopg drops its
    prepared statements on every ROLLBACK; after a commit there is nothing to undo, so skipping it
    keeps hot statements (the requisite selector above all) prepared instead of re-planned.
    """
    if dbapi_connection.info.transaction_status != TransactionStatus.IDLE:
        dbapi_connection.rollback()


def get_engine() -> Engine:
    """The process-wide engine."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = make_engine()
    return _engine


def get_session_factory() -> sessionmaker[Session]:
    """The process-wide session factory (bound to `get_engine()` unless a test rebound it)."""
    global _session_factory
    if _session_factory is None:
        with _lock:
            if _session_factory is None:
                _session_factory = sessionmaker(
                    bind=get_engine(), expire_on_commit=False, autoflush=True
                )
    return _session_factory


def SessionLocal() -> Session:
    """A new session from the process-wide factory."""
    return get_session_factory()()


def bind_session_factory(factory: sessionmaker[Session] | None) -> None:
    """Replace the session factory (tests bind it to a connection in an outer transaction)."""
    global _session_factory
    _session_factory = factory


def dispose_engine() -> None:
    """Drop the engine and its pool (after a fork, or at shutdown)."""
    global _engine, _session_factory
    with _lock:
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = None
        _session_factory = None
