"""Rate limiting on the real Redis: default limit, live settings, per-route limits, keys, fail open,
and blocking of repeated violators. Each test uses its own limiter key prefix."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from jivapay.enums import Role
from jivapay.middleware.rate_limiting import (
    ClientBlocked,
    KeyKind,
    get_rate_limiter,
    rate_limit,
    reset_rate_limiter,
)
from jivapay.security import create_access_token
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.servers.exception_handlers import PROBLEM_JSON
from jivapay.utils.config_loader import invalidate_cache, set_config_value


@pytest.fixture
def limiter_prefix(redis_url: str, redis_client: Any, unique: str) -> Iterator[str]:
    prefix = f"jivapay-rl-test-{unique}"
    reset_rate_limiter(redis_url, key_prefix=prefix)
    yield prefix
    keys = list(redis_client.scan_iter(f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


def _configure(db: Session, **values: str | int) -> None:
    for key, value in values.items():
        set_config_value(db, key, value)
    db.flush()
    invalidate_cache()


def _gateway_app() -> FastAPI:
    router = APIRouter()

    @router.get("/gateway/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @router.post(
        "/gateway/intake",
        dependencies=[Depends(rate_limit("RATE_LIMIT_GATEWAY_INIT", key="store"))],
    )
    def intake() -> dict[str, str]:
        return {"accepted": "yes"}

    return build_app(ServerName.GATEWAY, routers=[router])


def _assert_problem(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 429
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == 429
    return body


def test_default_limit_answers_429_problem_with_retry_after(db: Session, limiter_prefix: str):
    _configure(db, RATE_LIMIT_DEFAULT="3/minute")
    client = TestClient(_gateway_app())

    assert [client.get("/gateway/ping").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get("/gateway/ping")

    _assert_problem(refused, "rate_limited")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.headers["X-Request-ID"]
    # Liveness, readiness and metrics are never limited.
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_changed_limit_applies_without_restart(db: Session, limiter_prefix: str):
    _configure(db, RATE_LIMIT_DEFAULT="2/minute")
    client = TestClient(_gateway_app())
    assert [client.get("/gateway/ping").status_code for _ in range(3)] == [200, 200, 429]

    _configure(db, RATE_LIMIT_DEFAULT="4/minute")

    # `limits` keys a window by its limit too, so the new limit starts counting afresh.
    statuses = [client.get("/gateway/ping").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]


def test_default_limit_is_per_api_key_and_per_token_subject(db: Session, limiter_prefix: str):
    _configure(db, RATE_LIMIT_DEFAULT="1/minute")
    client = TestClient(_gateway_app())

    assert client.get("/gateway/ping", headers={"X-API-Key": "store-a"}).status_code == 200
    assert client.get("/gateway/ping", headers={"X-API-Key": "store-a"}).status_code == 429
    assert client.get("/gateway/ping", headers={"X-API-Key": "store-b"}).status_code == 200

    token_1 = create_access_token(1, Role.MERCHANT)
    token_2 = create_access_token(2, Role.MERCHANT)
    auth_1 = {"Authorization": f"Bearer {token_1}"}
    assert client.get("/gateway/ping", headers=auth_1).status_code == 200
    assert client.get("/gateway/ping", headers=auth_1).status_code == 429
    auth_2 = {"Authorization": f"Bearer {token_2}"}
    assert client.get("/gateway/ping", headers=auth_2).status_code == 200
    # A token that does not verify is no identity: it falls back to the client IP.
    forged = {"Authorization": "Bearer not-a-jwt"}
    assert client.get("/gateway/ping", headers=forged).status_code == 200
    assert client.get("/gateway/ping", headers=forged).status_code == 429


def test_gateway_intake_limit_is_keyed_by_store_api_key(db: Session, limiter_prefix: str):
    _configure(db, RATE_LIMIT_DEFAULT="100/minute", RATE_LIMIT_GATEWAY_INIT="2/minute")
    client = TestClient(_gateway_app())
    store_a = {"X-API-Key": "pk_store_a"}

    statuses = [client.post("/gateway/intake", headers=store_a).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert client.post("/gateway/intake", headers={"X-API-Key": "pk_store_b"}).status_code == 200
    # Other routes of the same store only count against the default limit.
    assert client.get("/gateway/ping", headers=store_a).status_code == 200


def test_login_route_has_its_own_limit_by_ip(db: Session, limiter_prefix: str, unique: str):
    _configure(db, RATE_LIMIT_DEFAULT="100/minute", RATE_LIMIT_LOGIN="2/minute")
    client = TestClient(build_app(Role.MERCHANT))
    form = {"username": f"nobody-{unique}@example.com", "password": "wrong-password"}

    first = client.post("/merchant/auth/token", data=form)
    second = client.post("/merchant/auth/token", data=form)
    third = client.post("/merchant/auth/token", data=form)

    assert (first.status_code, second.status_code) == (401, 401)
    body = _assert_problem(third, "rate_limited")
    assert int(third.headers["Retry-After"]) >= 1
    assert body["retry_after"] == int(third.headers["Retry-After"])
    # The login limit does not spill over to other routes.
    assert client.get("/merchant/me").status_code == 401


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_dead_redis_fails_open_and_counts_errors(db: Session, unique: str):
    _configure(db, RATE_LIMIT_DEFAULT="1/minute")
    reset_rate_limiter("redis://127.0.0.1:1/0", key_prefix=f"jivapay-rl-test-{unique}")
    before = _sample("rate_limit_storage_errors_total", {"server": "gateway"})
    client = TestClient(_gateway_app())

    started = time.monotonic()
    statuses = [client.get("/gateway/ping").status_code for _ in range(4)]
    elapsed = time.monotonic() - started

    assert statuses == [200, 200, 200, 200]
    assert _sample("rate_limit_storage_errors_total", {"server": "gateway"}) >= before + 1
    assert elapsed < 3.0


def test_repeated_violator_is_blocked(db: Session, limiter_prefix: str, redis_client: Any):
    _configure(
        db,
        RATE_LIMIT_DEFAULT="1/minute",
        RATE_LIMIT_BLOCK_AFTER_VIOLATIONS=2,
        RATE_LIMIT_BLOCK_WINDOW_SECONDS=60,
        RATE_LIMIT_BLOCK_SECONDS=300,
    )
    client = TestClient(_gateway_app())
    headers = {"X-API-Key": "pk_noisy"}

    assert client.get("/gateway/ping", headers=headers).status_code == 200
    _assert_problem(client.get("/gateway/ping", headers=headers), "rate_limited")
    blocking = client.get("/gateway/ping", headers=headers)
    _assert_problem(blocking, "client_blocked")
    assert 290 <= int(blocking.headers["Retry-After"]) <= 300

    still = client.get("/gateway/ping", headers=headers)
    _assert_problem(still, "client_blocked")
    assert 60 < int(still.headers["Retry-After"]) <= 300
    assert redis_client.ttl(f"{limiter_prefix}:blocked:" + _store_identity("pk_noisy")) > 60
    # Another client is not affected.
    assert client.get("/gateway/ping", headers={"X-API-Key": "pk_quiet"}).status_code == 200


def _store_identity(api_key: str) -> str:
    import hashlib

    return "store:" + hashlib.sha256(api_key.encode()).hexdigest()[:32]


def test_blocked_client_is_refused_by_route_dependencies_too(db: Session, limiter_prefix: str):
    _configure(db, RATE_LIMIT_DEFAULT="100/minute")
    limiter = get_rate_limiter()
    identity = _store_identity("pk_blocked")
    redis = limiter.storage.get_connection()  # type: ignore[attr-defined]
    redis.set(f"{limiter_prefix}:blocked:{identity}", "1", ex=120)
    client = TestClient(_gateway_app())

    refused = client.post("/gateway/intake", headers={"X-API-Key": "pk_blocked"})

    _assert_problem(refused, "client_blocked")
    assert 100 < int(refused.headers["Retry-After"]) <= 120


def test_rate_limit_dependency_rejects_unknown_setting_and_key_kind():
    with pytest.raises(Exception, match="unknown setting"):
        rate_limit("RATE_LIMIT_NOPE")
    with pytest.raises(ValueError):
        rate_limit("RATE_LIMIT_LOGIN", key="cookie")
    assert KeyKind("store") is KeyKind.STORE
    assert ClientBlocked.code == "client_blocked"
