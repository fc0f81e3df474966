"""The pool pings a connection only after it sat idle (`DB_PING_IDLE_SECONDS`), and a connection
that died is never handed to a second request: real PostgreSQL backends, killed with
`pg_terminate_backend` from another connection."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from jivapay.config import reset_settings_cache
from jivapay.database.engine import make_engine, normalize_database_url


@pytest.fixture
def pool(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Engine]]:
    """A one-connection engine of `make_engine` with `DB_PING_IDLE_SECONDS` set; disposed after."""
    made: list[Engine] = []

    def make(idle: str) -> Engine:
        monkeypatch.setenv("DB_PING_IDLE_SECONDS", idle)
        reset_settings_cache()
        try:
            made.append(make_engine(database_url, pool_size=1, max_overflow=0))
        finally:
            monkeypatch.delenv("DB_PING_IDLE_SECONDS")
            reset_settings_cache()
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def killer(database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_database_url(database_url))
    yield engine
    engine.dispose()


def _backend(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(killer: Engine, pid: int) -> None:
    with killer.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    # The backend is gone once the server no longer lists it.
    for _ in range(100):
        with killer.connect() as conn:
            alive = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar_one()
        if not alive:
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} still alive")


def _count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    pings: list[object] = []
    original = engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return original(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_returned_a_moment_ago_is_not_pinged(
    pool: Callable[[str], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = pool("30")
    pings = _count_pings(engine, monkeypatch)

    first = _backend(engine)

    assert [_backend(engine) for _ in range(5)] == [first] * 5
    assert pings == []


def test_an_idle_connection_that_died_is_replaced_before_use(
    pool: Callable[[str], Engine], killer: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = pool("0.05")
    pings = _count_pings(engine, monkeypatch)
    first = _backend(engine)
    _terminate(killer, first)
    time.sleep(0.1)

    second = _backend(engine)  # pinged, found dead, reconnected: no error reaches the caller

    assert second != first
    assert len(pings) == 1
    # The new connection is not pinged on its first checkout, nor right after it.
    assert _backend(engine) == second
    assert len(pings) == 1


def test_a_connection_killed_while_busy_fails_once_and_the_pool_starts_over(
    pool: Callable[[str], Engine], killer: Engine
) -> None:
    """The price of not pinging a connection returned a moment ago: the one statement that finds
    it dead fails with a disconnect (which the API answers 503 `database_error`), and the pool
    drops it, so the next checkout connects anew."""
    engine = pool("30")
    first = _backend(engine)
    _terminate(killer, first)

    with pytest.raises(DBAPIError) as failed, engine.connect() as conn:
        conn.execute(text("SELECT 1"))

    assert failed.value.connection_invalidated
    assert _backend(engine) != first


def test_zero_pings_on_every_checkout(
    pool: Callable[[str], Engine], killer: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = pool("0")
    pings = _count_pings(engine, monkeypatch)
    first = _backend(engine)
    assert _backend(engine) == first
    _terminate(killer, first)

    assert _backend(engine) != first  # no idle time at all, and still replaced
    assert len(pings) == 2
