"""A database that is down, restarting or out of pooled connections answers 503 `database_error`
with `Retry-After` (the chaos run saw every request during a PostgreSQL restart answer a 500 and
log a traceback); an error of a working server (a query cancelled by its timeout) stays a 500.
Real connections throughout: a port nothing listens on, a real one-connection pool, a real
`statement_timeout`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import sessionmaker

from jivapay.api_routers.gateway.router import router as gateway_router
from jivapay.database.engine import bind_session_factory, normalize_database_url
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.servers.exception_handlers import PROBLEM_JSON, register_exception_handlers
from tests.callback_receiver import free_port
from tests.factories import gateway_headers, make_reference, make_store


@pytest.fixture
def dead_engine() -> Iterator[Engine]:
    """An engine whose server is not there (a restart in progress, as far as a client can tell)."""
    engine = create_engine(
        normalize_database_url(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"),
        pool_pre_ping=True,
    )
    yield engine
    engine.dispose()


def _assert_unavailable(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["code"] == "database_error"
    assert "127.0.0.1" not in response.text and "Connection refused" not in response.text


def test_gateway_answers_503_while_the_database_is_unreachable(db, dead_engine: Engine) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    store = make_store(db, ref)
    db.commit()
    client = TestClient(
        build_app(ServerName.GATEWAY, routers=[gateway_router]), raise_server_exceptions=False
    )
    path = "/gateway/payin/status/ord_missing"
    bind_session_factory(sessionmaker(bind=dead_engine))

    response = client.get(path, headers=gateway_headers(store, "GET", path))

    _assert_unavailable(response)


def _app(engine: Engine) -> FastAPI:
    app = FastAPI()
    register_exception_handlers(app)

    @app.get("/query")
    def query() -> dict[str, int]:
        with engine.connect() as conn:
            return {"one": int(conn.execute(text("SELECT 1")).scalar_one())}

    @app.get("/cancelled")
    def cancelled() -> None:
        with engine.connect() as conn:
            conn.execute(text("SET statement_timeout = 50"))
            conn.execute(text("SELECT pg_sleep(5)"))

    return app


def test_an_exhausted_pool_is_503(database_url: str) -> None:
    engine = create_engine(
        normalize_database_url(database_url), pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    client = TestClient(_app(engine), raise_server_exceptions=False)
    try:
        assert client.get("/query").json() == {"one": 1}
        with engine.connect():  # the only connection, held
            _assert_unavailable(client.get("/query"))
        assert client.get("/query").json() == {"one": 1}
    finally:
        engine.dispose()


def test_an_error_of_a_working_database_stays_a_500(database_url: str) -> None:
    engine = create_engine(normalize_database_url(database_url))
    client = TestClient(_app(engine), raise_server_exceptions=False)
    try:
        response = client.get("/cancelled")
    finally:
        engine.dispose()

    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "retry-after" not in response.headers
