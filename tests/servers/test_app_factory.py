"""The six servers from the app factory: health, readiness (and its 503), metrics, docs, login and
role guards, and problem+json for 404, validation errors and unexpected errors."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from jivapay.config import reset_settings_cache
from jivapay.database.engine import dispose_engine
from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.servers.app_factory import DEFAULT_PORTS, ServerName, build_app
from jivapay.servers.exception_handlers import PROBLEM_JSON

SERVERS = [name.value for name in ServerName]


def _server_app(name: str) -> FastAPI:
    module = importlib.import_module(f"jivapay.servers.{name}.server")
    app: FastAPI = module.app
    return app


def test_every_server_has_a_distinct_default_port():
    assert set(DEFAULT_PORTS) == set(ServerName)
    assert len(set(DEFAULT_PORTS.values())) == len(DEFAULT_PORTS)
    assert DEFAULT_PORTS[ServerName.GATEWAY] == 8003


@pytest.mark.parametrize("name", SERVERS)
def test_health_ready_metrics_and_docs(db: Session, name: str):
    with TestClient(_server_app(name)) as client:  # runs the lifespan (logging, Sentry)
        health = client.get("/health")
        ready = client.get("/ready")
        metrics = client.get("/metrics")
        docs = client.get("/docs")
        openapi = client.get("/openapi.json")

    assert health.status_code == 200
    assert health.json() == {"status": "ok", "server": name}
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "rate_limiter": "ok"}
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "http_requests_total" in metrics.text
    assert docs.status_code == 200
    paths = openapi.json()["paths"]
    assert "/health" in paths and "/ready" in paths
    assert "/metrics" not in paths


@pytest.mark.parametrize("name", [r.value for r in Role])
def test_role_servers_have_login_and_me(name: str):
    paths = TestClient(_server_app(name)).get("/openapi.json").json()["paths"]
    login = "/support/auth/login" if name == "support" else f"/{name}/auth/token"
    assert login in paths
    assert f"/{name}/me" in paths


def test_gateway_has_no_login():
    paths = TestClient(_server_app("gateway")).get("/openapi.json").json()["paths"]
    assert not [p for p in paths if "/auth/" in p or p.endswith("/me")]


def test_me_requires_a_bearer_token(services: Any):
    response = TestClient(_server_app("merchant")).get("/merchant/me")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["code"] == "authentication_failed"


def _things_router(prefix: str) -> APIRouter:
    router = APIRouter()

    @router.get(f"{prefix}/things")
    def list_things() -> list[str]:
        return ["a"]

    return router


def test_role_server_routers_are_guarded_by_the_role(db: Session):
    app = build_app(Role.TRADER, routers=[_things_router("/trader")])
    client = TestClient(app)

    anonymous = client.get("/trader/things")
    unknown_user = client.get(
        "/trader/things",
        headers={"Authorization": f"Bearer {create_access_token(987654321, Role.TRADER)}"},
    )

    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "authentication_failed"
    assert unknown_user.status_code == 401


def test_gateway_routers_are_included_as_given(services: Any):
    app = build_app("gateway", routers=[_things_router("/gateway")], title="Custom title")
    client = TestClient(app)
    assert client.get("/gateway/things").json() == ["a"]
    assert client.get("/openapi.json").json()["info"]["title"] == "Custom title"


@pytest.fixture
def dead_dependencies(services: Any) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "REDIS_URL")}
    os.environ["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/nowhere"
    os.environ["REDIS_URL"] = "redis://127.0.0.1:1/0"
    reset_settings_cache()
    dispose_engine()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_settings_cache()
        dispose_engine()


def test_ready_answers_503_problem_naming_failed_dependencies(dead_dependencies: None):
    client = TestClient(_server_app("admin"))

    response = client.get("/ready")
    health = client.get("/health")

    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["code"] == "not_ready"
    assert body["status"] == 503
    assert set(body["failed"]) == {"database", "redis", "rate_limiter"}
    assert body["checks"]["database"] in {"unavailable", "timeout"}
    assert "database" in body["detail"] and "redis" in body["detail"]
    assert "127.0.0.1:1" not in response.text  # no connection strings leak
    assert health.status_code == 200


def _failing_app() -> FastAPI:
    router = APIRouter()

    @router.get("/gateway/boom")
    def boom() -> None:
        raise RuntimeError("secret detail 4111111111111111")

    @router.get("/gateway/items/{item_id}")
    def item(item_id: int, size: int) -> dict[str, int]:
        return {"item_id": item_id, "size": size}

    return build_app(ServerName.GATEWAY, routers=[router])


def test_unexpected_error_is_a_bare_500_problem(services: Any, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()
    with TestClient(_failing_app(), raise_server_exceptions=False) as client:
        response = client.get("/gateway/boom", headers={"X-Request-ID": "boom-1"})
    logged = capsys.readouterr().out

    assert response.status_code == 500
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.headers["X-Request-ID"] == "boom-1"
    body = response.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "boom-1"
    assert "secret detail" not in response.text
    assert "4111111111111111" not in response.text
    assert "RuntimeError" not in response.text
    # The log keeps the error for operators, with the id bound and the card number masked.
    assert "unhandled_error" in logged
    assert "boom-1" in logged
    assert "****1111" in logged
    assert "4111111111111111" not in logged


def test_not_found_is_problem_json(services: Any):
    response = TestClient(_failing_app()).get("/gateway/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["code"] == "not_found"
    # A tag URI: it names the problem and links to no outside domain.
    assert body["type"] == "tag:jivapay,2026:problem:not_found"
    assert body["status"] == 404
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_validation_error_is_problem_json_listing_fields(services: Any):
    response = TestClient(_failing_app()).get("/gateway/items/abc")
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["code"] == "validation_failed"
    locations = {tuple(error["loc"]) for error in body["errors"]}
    assert ("path", "item_id") in locations
    assert ("query", "size") in locations
