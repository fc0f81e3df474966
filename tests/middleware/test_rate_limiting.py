"""Rate limiting on real Redis servers (the machine's Redis 7 and a Redis 6.2): who is counted against
which limit (a revoked token apart from its owner's, an IPv6 client by its /64), live settings, the
IETF RateLimit fields, the block list that only ever hits failing unauthenticated callers, the
per-account login throttle (parallel guesses included), fail-open and `/ready`.

Each test uses its own limiter key prefix and runs once per Redis version."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker

from jivapay.api_routers.deps import CurrentStore
from jivapay.api_routers.gateway.router import router as gateway_router
from jivapay.database.models import User
from jivapay.enums import Role
from jivapay.middleware.rate_limiting import (
    ClientBlocked,
    KeyKind,
    RequestRateLimiter,
    get_rate_limiter,
    rate_limit,
    reset_rate_limiter,
)
from jivapay.security import create_access_token
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.servers.exception_handlers import PROBLEM_JSON
from jivapay.servers.serving import proxy_options
from jivapay.services.auth_service import create_user
from jivapay.utils.config_loader import invalidate_cache, set_config_value
from tests.factories import (
    StoreWorld,
    gateway_headers,
    make_bank_method,
    make_reference,
    make_store,
    make_user,
)

D = Decimal
PASSWORD = "factory-password-1"


@pytest.fixture
def limiter_prefix(limiter_redis_url: str, unique: str) -> Iterator[str]:
    prefix = f"jivapay-rl-test-{unique}"
    reset_rate_limiter(limiter_redis_url, key_prefix=prefix)
    yield prefix
    reset_rate_limiter()
    client = redis.Redis.from_url(limiter_redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


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

    @router.get("/gateway/store-ping")
    def store_ping(store: CurrentStore) -> dict[str, int]:
        return {"store": store.store_id}

    @router.post(
        "/gateway/intake",
        dependencies=[Depends(rate_limit("RATE_LIMIT_GATEWAY_INIT", key="store"))],
    )
    def intake() -> dict[str, str]:
        return {"accepted": "yes"}

    return build_app(ServerName.GATEWAY, routers=[router, gateway_router])


def _assert_problem(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == 429
    return body


def _signed(world: StoreWorld, method: str, path: str) -> dict[str, str]:
    return gateway_headers(world, method, path)


@pytest.fixture
def store(db: Session) -> StoreWorld:
    ref = make_reference(db, rate=D("95.5"))
    make_bank_method(db, ref)
    world = make_store(db, ref)
    db.commit()
    return world


@pytest.fixture
def other_store(db: Session) -> StoreWorld:
    world = make_store(db, make_reference(db))
    db.commit()
    return world


# ---------------------------------------------------------------------- the default limit


def _exceeded(scope: str) -> float:
    """`rate_limit_exceeded_total` of one scope, summed over servers."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "rate_limit_exceeded"
        for sample in metric.samples
        if sample.name == "rate_limit_exceeded_total" and sample.labels.get("scope") == scope
    )


def test_default_limit_answers_429_problem_with_retry_after_and_ietf_fields(
    db: Session, limiter_prefix: str
):
    _configure(db, RATE_LIMIT_DEFAULT="3/minute")
    client = TestClient(_gateway_app())
    exceeded = _exceeded("default")

    first = client.get("/gateway/ping")
    assert first.headers["RateLimit-Policy"] == '"default";q=3;w=60'
    assert first.headers["RateLimit"].startswith('"default";r=2;t=')
    assert [client.get("/gateway/ping").status_code for _ in range(2)] == [200, 200]
    refused = client.get("/gateway/ping")

    _assert_problem(refused, "rate_limited")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.headers["RateLimit"].startswith('"default";r=0;t=')
    assert refused.headers["X-Request-ID"]
    assert _exceeded("default") == exceeded + 1  # rate_limit_exceeded_total moved by the refusal
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


def test_default_limit_is_per_token_subject_and_ignores_api_key_headers(
    db: Session, limiter_prefix: str
):
    _configure(db, RATE_LIMIT_DEFAULT="1/minute")
    client = TestClient(build_app(Role.MERCHANT))

    # A fresh X-API-Key on every request is no new identity: the caller is still its IP.
    assert client.get("/health", headers={"X-API-Key": "a"}).status_code == 200
    assert client.get("/merchant/me", headers={"X-API-Key": "a"}).status_code == 401
    refused = client.get("/merchant/me", headers={"X-API-Key": "b"})
    _assert_problem(refused, "rate_limited")

    auth_1 = {"Authorization": f"Bearer {create_access_token(1, Role.MERCHANT)}"}
    auth_2 = {"Authorization": f"Bearer {create_access_token(2, Role.MERCHANT)}"}
    assert client.get("/merchant/me", headers=auth_1).status_code != 429
    _assert_problem(client.get("/merchant/me", headers=auth_1), "rate_limited")
    assert client.get("/merchant/me", headers=auth_2).status_code != 429
    # A token that does not verify is no identity: the IP, already used up.
    forged = {"Authorization": "Bearer not-a-jwt"}
    _assert_problem(client.get("/merchant/me", headers=forged), "rate_limited")


def test_random_api_keys_on_unauthenticated_gateway_routes_share_the_ip_limit(
    db: Session, limiter_prefix: str
):
    _configure(db, RATE_LIMIT_DEFAULT="2/minute")
    client = TestClient(_gateway_app())

    statuses = [
        client.get("/gateway/ping", headers={"X-API-Key": uuid.uuid4().hex}).status_code
        for _ in range(3)
    ]

    assert statuses == [200, 200, 429]


def _bearer(user: User) -> dict[str, str]:
    token = create_access_token(user.id, Role.MERCHANT, token_version=user.token_version)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def revoked_merchant(db: Session) -> tuple[User, dict[str, str], dict[str, str]]:
    """A merchant whose first token was revoked (as a password change does): (user, stale, fresh)."""
    user = create_user(
        db, email=f"m-{uuid.uuid4().hex[:10]}@rl.test", password=PASSWORD, role=Role.MERCHANT
    )
    db.commit()
    stale = _bearer(user)
    user.token_version += 1  # `revoke_tokens`
    db.commit()
    return user, stale, _bearer(user)


def test_a_revoked_token_counts_in_a_bucket_of_its_own(
    db: Session, limiter_prefix: str, revoked_merchant: tuple[User, dict[str, str], dict[str, str]]
):
    """Audit finding: the middleware (which reads no database) counted a revoked but well-signed
    token against its owner's bucket, so the thief of a token, locked out by the owner's password
    change, could keep the owner at 429 for the rest of the token's life."""
    _configure(db, RATE_LIMIT_DEFAULT="3/minute")
    _user, stale, fresh = revoked_merchant
    app = build_app(Role.MERCHANT)
    thief = TestClient(app, client=("203.0.113.66", 4000))
    owner = TestClient(app, client=("198.51.100.20", 4000))

    thief_answers = [thief.get("/merchant/me", headers=stale) for _ in range(5)]

    assert [r.status_code for r in thief_answers] == [401, 401, 401, 429, 429]
    assert thief_answers[0].json()["code"] == "token_revoked"
    answers = [owner.get("/merchant/me", headers=fresh) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]


@pytest.mark.parametrize(
    ("addresses", "statuses"),
    [
        # One /64, four addresses: one caller.
        ([f"2001:db8:1:2::{n + 1:x}" for n in range(4)], [401, 401, 429, 429]),
        (
            ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:3::1"],
            [401, 401, 401],
        ),
        # IPv4, and IPv4-mapped IPv6 as the same IPv4 address.
        (["192.0.2.7", "::ffff:192.0.2.7", "192.0.2.8"], [401, 401, 401]),
        (["192.0.2.7", "::ffff:192.0.2.7", "192.0.2.7"], [401, 401, 429]),
    ],
)
def test_an_ipv6_client_is_counted_by_its_64_network(
    db: Session, limiter_prefix: str, addresses: list[str], statuses: list[int]
):
    """Audit finding: an IPv6 client picks any of its /64's 2^64 addresses per request, so keyed
    by its full address it escaped every per-IP control (the default limit, the login limit per
    IP, the block list)."""
    _configure(db, RATE_LIMIT_DEFAULT="2/minute")
    app = build_app(Role.MERCHANT)

    answers = [
        TestClient(app, client=(address, 4000)).get("/merchant/me").status_code
        for address in addresses
    ]

    assert answers == statuses


def test_an_ipv6_network_is_blocked_whole(db: Session, limiter_prefix: str):
    _configure(
        db,
        RATE_LIMIT_DEFAULT="100/minute",
        RATE_LIMIT_BLOCK_AFTER_VIOLATIONS=2,
        RATE_LIMIT_BLOCK_WINDOW_SECONDS=60,
        RATE_LIMIT_BLOCK_SECONDS=300,
    )
    app = build_app(Role.MERCHANT)

    for n in range(3):
        assert (
            TestClient(app, client=(f"2001:db8:9::{n + 1}", 1)).get("/merchant/me").status_code
            == 401
        )

    _assert_problem(
        TestClient(app, client=("2001:db8:9::abcd", 1)).get("/merchant/me"), "client_blocked"
    )
    assert get_rate_limiter().blocked_seconds("ip:2001:db8:9::/64", server="merchant") > 0
    assert TestClient(app, client=("2001:db8:9:1::1", 1)).get("/merchant/me").status_code == 401


# ---------------------------------------------------------------------- stores on the gateway


def test_refused_signatures_never_count_against_the_store_they_name(
    db: Session, limiter_prefix: str, store: StoreWorld
):
    """Finding: anyone knowing a store's public key could block it for 15 minutes."""
    _configure(
        db,
        RATE_LIMIT_DEFAULT="5/minute",
        RATE_LIMIT_GATEWAY="3/minute",
        RATE_LIMIT_BLOCK_AFTER_VIOLATIONS=3,
        RATE_LIMIT_BLOCK_SECONDS=900,
    )
    attacker = TestClient(_gateway_app(), client=("203.0.113.9", 5000))
    merchant = TestClient(_gateway_app(), client=("198.51.100.7", 5000))
    forged = {"X-API-Key": store.public_key, "X-Timestamp": str(int(time.time()))}
    forged["X-Signature"] = "0" * 64

    attempts = [attacker.get("/gateway/store-ping", headers=forged) for _ in range(6)]

    assert [r.status_code for r in attempts[:3]] == [401, 401, 401]
    # Past the failure threshold the attacker's IP is blocked, with the block's Retry-After.
    _assert_problem(attempts[4], "client_blocked")
    assert 800 < int(attempts[4].headers["Retry-After"]) <= 900
    assert "WWW-Authenticate" not in attempts[0].headers
    # The store's own quota is untouched: its signed requests pass, with all 3 of its quota.
    ok = merchant.get("/gateway/store-ping", headers=_signed(store, "GET", "/gateway/store-ping"))
    assert ok.status_code == 200
    assert ok.headers["RateLimit"].startswith('"gateway";r=2;')
    # Even from the blocked IP, valid credentials are served: only failing callers are blocked.
    path = "/gateway/store-ping"
    assert attacker.get(path, headers=_signed(store, "GET", path)).status_code == 200
    _assert_problem(attacker.get("/gateway/ping"), "client_blocked")


def test_a_store_over_its_gateway_limit_gets_429s_and_is_never_blocked(
    db: Session, limiter_prefix: str, store: StoreWorld, other_store: StoreWorld
):
    """Finding: a merchant polling at 3 req/s got the whole store blocked for 15 minutes."""
    _configure(
        db,
        RATE_LIMIT_DEFAULT="1/minute",
        RATE_LIMIT_GATEWAY="3/minute",
        RATE_LIMIT_BLOCK_AFTER_VIOLATIONS=2,
    )
    client = TestClient(_gateway_app())
    path = "/gateway/store-ping"

    statuses = [client.get(path, headers=_signed(store, "GET", path)) for _ in range(8)]

    # The default (IP) limit of 1/minute does not apply to a verified store: 3 pass.
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    for refused in statuses[3:]:
        _assert_problem(refused, "rate_limited")
        assert refused.headers["RateLimit-Policy"] == '"gateway";q=3;w=60'
    assert client.get(path, headers=_signed(other_store, "GET", path)).status_code == 200


def test_default_gateway_limit_lets_a_merchant_poll_far_beyond_the_old_100_per_minute(
    db: Session, limiter_prefix: str, store: StoreWorld
):
    client = TestClient(_gateway_app())
    path = "/gateway/payin/status/does-not-exist"

    statuses = {
        client.get(path, headers=_signed(store, "GET", path)).status_code for _ in range(130)
    }

    assert statuses == {404}


def test_the_one_trip_intake_routes_count_the_intake_limit_before_validating(
    db: Session, limiter_prefix: str, store: StoreWorld, other_store: StoreWorld
):
    # The real intake routes resolve their dependencies themselves (`OneTripIntakeRoute`): the
    # limit their `rate_limit` dependency declares must still be counted, before the body's 422.
    _configure(db, RATE_LIMIT_GATEWAY="100/minute", RATE_LIMIT_GATEWAY_INIT="2/minute")
    client = TestClient(_gateway_app())

    def intake(world: StoreWorld, path: str) -> Any:
        headers = gateway_headers(world, "POST", path, b"{}", idempotency_key=uuid.uuid4().hex)
        return client.post(path, content=b"{}", headers=headers)

    answers = [intake(store, p) for p in ("/gateway/payin/init", "/gateway/payout/init") * 2]

    assert [r.status_code for r in answers] == [422, 422, 429, 429]
    _assert_problem(answers[2], "rate_limited")
    assert '"gateway_init";q=2;w=60' in answers[2].headers["RateLimit-Policy"]
    assert intake(other_store, "/gateway/payin/init").status_code == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # the one-trip intake reads the body before the signature; FastAPI parses a cancel's
        ("/gateway/payin/init", b'{"merchant_order_id": "' + b"x" * 50_000),
        ("/gateway/orders/ord_x/cancel", b"{not json"),
        ("/gateway/payout/init", b"\xff\xfe not utf-8"),
    ],
)
def test_a_store_route_refused_before_its_signature_counts_against_the_ip(
    db: Session, limiter_prefix: str, store: StoreWorld, path: str, body: bytes
):
    # Store routes are counted once the signature verifies; a body that fails before that
    # (not JSON, not UTF-8) must still count against the anonymous caller's IP.
    _configure(db, RATE_LIMIT_DEFAULT="3/minute")
    anonymous = TestClient(_gateway_app(), client=("203.0.113.50", 4000))
    json_type = {"Content-Type": "application/json"}

    answers = [anonymous.post(path, content=body, headers=json_type) for _ in range(5)]

    assert [r.status_code for r in answers] == [422, 422, 422, 429, 429]
    assert answers[0].headers["RateLimit"].startswith('"default";r=2;')
    _assert_problem(answers[3], "rate_limited")
    # A verified request from the same address is the store's, and is served.
    signed = gateway_headers(store, "GET", "/gateway/store-ping")
    assert anonymous.get("/gateway/store-ping", headers=signed).status_code == 200


def test_gateway_intake_has_its_own_limit_per_authenticated_store(
    db: Session, limiter_prefix: str, store: StoreWorld, other_store: StoreWorld
):
    _configure(db, RATE_LIMIT_GATEWAY="100/minute", RATE_LIMIT_GATEWAY_INIT="2/minute")
    client = TestClient(_gateway_app())

    statuses = [
        client.post("/gateway/intake", headers=_signed(store, "POST", "/gateway/intake"))
        for _ in range(3)
    ]

    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert '"gateway_init";q=2;w=60' in statuses[2].headers["RateLimit-Policy"]
    other = _signed(other_store, "POST", "/gateway/intake")
    assert client.post("/gateway/intake", headers=other).status_code == 200
    # Other routes of the same store only count against RATE_LIMIT_GATEWAY.
    path = "/gateway/store-ping"
    assert client.get(path, headers=_signed(store, "GET", path)).status_code == 200
    # An unsigned intake is a 401, and never reaches the store's intake quota.
    bad = {"X-API-Key": other_store.public_key}
    assert client.post("/gateway/intake", headers=bad).status_code == 401
    assert client.post("/gateway/intake", headers=other).status_code == 200


# ---------------------------------------------------------------------- login


def test_login_is_limited_per_ip(db: Session, limiter_prefix: str, unique: str):
    """Finding (embedded Redis 6.2): 15 wrong logins all got 401, never 429."""
    client = TestClient(build_app(Role.MERCHANT))

    statuses = []
    for attempt in range(15):
        form = {"username": f"nobody-{attempt}-{unique}@example.com", "password": "wrong-password"}
        statuses.append(client.post("/merchant/auth/token", data=form))

    assert [r.status_code for r in statuses[:10]] == [401] * 10
    body = _assert_problem(statuses[10], "rate_limited")
    assert body["retry_after"] == int(statuses[10].headers["Retry-After"])
    # The login limit does not spill over to other routes.
    assert client.get("/merchant/me").status_code == 401


def test_failed_logins_throttle_the_account_from_any_ip(db: Session, limiter_prefix: str):
    _configure(db, RATE_LIMIT_LOGIN="3/minute")
    user = make_user(db, Role.MERCHANT)
    db.commit()
    app = build_app(Role.MERCHANT)
    wrong = {"username": user.email.upper(), "password": "wrong-password"}
    right = {"username": user.email, "password": PASSWORD}

    statuses = [
        TestClient(app, client=(f"192.0.2.{n}", 1000)).post("/merchant/auth/token", data=wrong)
        for n in range(3)
    ]
    assert [r.status_code for r in statuses] == [401, 401, 401]

    # A fourth IP, even with the right password: the account is throttled before the check.
    refused = TestClient(app, client=("192.0.2.200", 1000)).post("/merchant/auth/token", data=right)
    _assert_problem(refused, "rate_limited")
    # Another account is not affected.
    other = make_user(db, Role.MERCHANT)
    db.commit()
    form = {"username": other.email, "password": PASSWORD}
    ok = TestClient(app, client=("192.0.2.201", 1000)).post("/merchant/auth/token", data=form)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("role", "path", "content_type"),
    [
        (Role.MERCHANT, "/merchant/auth/token", "Application/X-WWW-Form-Urlencoded"),
        (Role.SUPPORT, "/support/auth/login", "APPLICATION/JSON"),
    ],
)
def test_the_account_is_found_whatever_the_case_of_the_media_type(
    db: Session, limiter_prefix: str, role: Role, path: str, content_type: str
):
    # Media types are case-insensitive and the login reads them so: a guesser writing one in
    # capitals must still be counted against the account.
    _configure(db, RATE_LIMIT_LOGIN="3/minute")
    email = make_user(db, role).email
    db.commit()
    app = build_app(role)
    if content_type.lower().endswith("json"):
        body = json.dumps({"email": email, "password": "wrong-password"}).encode()
    else:
        body = urlencode({"username": email, "password": "wrong-password"}).encode()

    statuses = [
        TestClient(app, client=(f"192.0.2.{n}", 1000))
        .post(path, content=body, headers={"Content-Type": content_type})
        .status_code
        for n in range(5)
    ]

    assert statuses == [401, 401, 401, 429, 429]


def test_own_password_guesses_are_limited_per_account_from_any_ip(db: Session, limiter_prefix: str):
    # A stolen session guessing its owner's current password from many addresses.
    from jivapay.servers.merchant.server import ROUTERS

    _configure(db, RATE_LIMIT_LOGIN="3/minute")
    merchant = make_store(db, make_reference(db)).merchant
    db.commit()
    app = build_app(Role.MERCHANT, routers=ROUTERS)
    token = {"Authorization": f"Bearer {create_access_token(merchant.user_id, Role.MERCHANT)}"}

    statuses = [
        TestClient(app, client=(f"192.0.2.{n + 80}", 1000))
        .post(
            "/merchant/password",
            headers=token,
            json={"current_password": f"guess-{n}-xxxxxx", "new_password": "brand-new-pass-1"},
        )
        .status_code
        for n in range(5)
    ]

    assert statuses == [422, 422, 422, 429, 429]


def test_a_right_password_under_the_account_limit_still_logs_in(db: Session, limiter_prefix: str):
    # The attempt is counted before the password check and given back when it succeeds: two
    # failures of three leave room for the right password, and the success leaves them at two.
    _configure(db, RATE_LIMIT_LOGIN="3/minute")
    user = make_user(db, Role.MERCHANT)
    db.commit()
    app = build_app(Role.MERCHANT)
    wrong = {"username": user.email, "password": "wrong-password"}
    right = {"username": user.email, "password": PASSWORD}

    def login(n: int, form: dict[str, str]) -> int:
        client = TestClient(app, client=(f"192.0.2.{n + 20}", 1000))
        return client.post("/merchant/auth/token", data=form).status_code

    statuses = [login(0, wrong), login(1, wrong), login(2, right), login(3, right)]
    statuses += [login(4, wrong), login(5, right)]

    assert statuses == [401, 401, 200, 200, 401, 429]


@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_a_hit_given_back_is_uncounted(
    db: Session, limiter_redis_url: str, limiter_prefix: str, unique: str, storage: str
):
    # What a successful login does with the account's attempt, on Redis and on the in-process
    # storage used without REDIS_URL.
    _configure(db, RATE_LIMIT_LOGIN="2/minute")
    url = limiter_redis_url if storage == "redis" else "memory://"
    limiter = RequestRateLimiter(url, key_prefix=limiter_prefix)
    account = f"account:{unique}"

    def check() -> bool:
        return limiter.check("RATE_LIMIT_LOGIN", account, scope="t", server="test").allowed

    try:
        assert [check(), check(), check()] == [True, True, False]
        limiter.give_back("RATE_LIMIT_LOGIN", account, scope="t", server="test")
        assert [check(), check()] == [True, False]
        limiter.give_back("RATE_LIMIT_LOGIN", f"account:other-{unique}", scope="t", server="test")
        assert check() is False  # another account's give-back leaves this one's count alone
    finally:
        limiter.close()


@pytest.fixture
def login_email(committed_db: sessionmaker[Session], limiter_prefix: str) -> Iterator[str]:
    """A committed merchant account with `RATE_LIMIT_LOGIN` 3/minute, for parallel sessions."""
    with committed_db() as session:
        _configure(session, RATE_LIMIT_LOGIN="3/minute")
        email = make_user(session, Role.MERCHANT).email
        session.commit()
    invalidate_cache()
    yield email
    invalidate_cache()


def test_parallel_wrong_passwords_cannot_exceed_the_account_limit(login_email: str):
    """Audit finding: the account's failures were tested before the password check and counted
    after it, so guesses sent at once (from as many addresses) all passed the test and all had
    their password checked. Now each attempt is counted, atomically, before the check."""
    app = build_app(Role.MERCHANT)
    senders = 12
    barrier = threading.Barrier(senders)
    statuses: list[int] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        with TestClient(app, client=(f"192.0.2.{n + 10}", 1000)) as client:
            barrier.wait()
            form = {"username": login_email, "password": f"wrong-guess-{n}"}
            response = client.post("/merchant/auth/token", data=form)
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(statuses) == [401] * 3 + [429] * (senders - 3)


def test_successful_logins_do_not_throttle_the_account(db: Session, limiter_prefix: str):
    _configure(db, RATE_LIMIT_LOGIN="2/minute")
    user = make_user(db, Role.MERCHANT)
    db.commit()
    app = build_app(Role.MERCHANT)
    form = {"username": user.email, "password": PASSWORD}

    statuses = [
        TestClient(app, client=(f"192.0.2.{n}", 1000)).post("/merchant/auth/token", data=form)
        for n in range(4)
    ]

    assert [r.status_code for r in statuses] == [200] * 4


# ---------------------------------------------------------------------- the block list


def test_unauthenticated_failures_block_the_ip_but_not_a_valid_token(
    db: Session, limiter_prefix: str
):
    _configure(
        db,
        RATE_LIMIT_DEFAULT="100/minute",
        RATE_LIMIT_BLOCK_AFTER_VIOLATIONS=2,
        RATE_LIMIT_BLOCK_WINDOW_SECONDS=60,
        RATE_LIMIT_BLOCK_SECONDS=300,
    )
    client = TestClient(build_app(Role.MERCHANT))

    statuses = [client.get("/merchant/me").status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    blocked = client.get("/merchant/me")
    _assert_problem(blocked, "client_blocked")
    assert 290 <= int(blocked.headers["Retry-After"]) <= 300
    # Other IPs are not affected.
    other = TestClient(build_app(Role.MERCHANT), client=("192.0.2.50", 1))
    assert other.get("/merchant/me").status_code == 401
    # A caller with a valid token is never blocked, even from the blocked IP.
    token = create_access_token(1, Role.MERCHANT)
    answer = client.get("/merchant/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code != 429


def test_failures_with_a_revoked_token_count_towards_the_ip_block(
    db: Session, limiter_prefix: str, revoked_merchant: tuple[User, dict[str, str], dict[str, str]]
):
    """Audit finding: only requests without a well-signed token had their 401s noted, so an
    address failing with a revoked token (or one of a disabled user) was never blocked."""
    _configure(
        db,
        RATE_LIMIT_DEFAULT="100/minute",
        RATE_LIMIT_BLOCK_AFTER_VIOLATIONS=2,
        RATE_LIMIT_BLOCK_WINDOW_SECONDS=60,
        RATE_LIMIT_BLOCK_SECONDS=300,
    )
    _user, stale, fresh = revoked_merchant
    client = TestClient(build_app(Role.MERCHANT), client=("203.0.113.67", 4000))

    failures = [client.get("/merchant/me", headers=stale) for _ in range(4)]

    assert {r.status_code for r in failures} == {401}
    _assert_problem(client.get("/merchant/me"), "client_blocked")
    # The owner's valid token is still served from the blocked address.
    assert client.get("/merchant/me", headers=fresh).status_code == 200


def test_a_valid_user_on_a_blocked_address_can_change_their_password(
    db: Session, limiter_prefix: str
):
    """Audit finding: the own-password route's IP limit was blockable although its guard had
    authenticated the user, so a user behind an address another caller had got blocked (a NAT,
    an office) could use every route but this one."""
    from jivapay.servers.merchant.server import ROUTERS

    _configure(
        db,
        RATE_LIMIT_DEFAULT="100/minute",
        RATE_LIMIT_BLOCK_AFTER_VIOLATIONS=2,
        RATE_LIMIT_BLOCK_WINDOW_SECONDS=60,
        RATE_LIMIT_BLOCK_SECONDS=300,
    )
    user = create_user(
        db, email=f"m-{uuid.uuid4().hex[:10]}@rl.test", password=PASSWORD, role=Role.MERCHANT
    )
    db.commit()
    app = build_app(Role.MERCHANT, routers=ROUTERS)
    shared_nat = ("203.0.113.80", 4000)
    stranger = TestClient(app, client=shared_nat)
    assert [stranger.get("/merchant/me").status_code for _ in range(3)] == [401] * 3
    _assert_problem(stranger.get("/merchant/me"), "client_blocked")

    user_client = TestClient(app, client=shared_nat)
    assert user_client.get("/merchant/me", headers=_bearer(user)).status_code == 200
    answer = user_client.post(
        "/merchant/password",
        headers=_bearer(user),
        json={"current_password": PASSWORD, "new_password": "brand-new-password-2"},
    )

    assert answer.status_code == 204, answer.text
    # The address stays blocked for callers without credentials.
    _assert_problem(stranger.post("/merchant/password", json={}), "client_blocked")


def test_successful_requests_never_lead_to_a_block(db: Session, limiter_prefix: str):
    _configure(db, RATE_LIMIT_DEFAULT="1/minute", RATE_LIMIT_BLOCK_AFTER_VIOLATIONS=1)
    client = TestClient(_gateway_app())

    statuses = [client.get("/gateway/ping") for _ in range(6)]

    assert statuses[0].status_code == 200
    for refused in statuses[1:]:
        _assert_problem(refused, "rate_limited")


# ---------------------------------------------------------------------- storage faults and /ready


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ready_reports_the_rate_limiter_working(db: Session, limiter_prefix: str):
    client = TestClient(_gateway_app())

    answer = client.get("/ready")

    assert answer.json()["checks"]["rate_limiter"] == "ok"


def test_dead_redis_fails_open_counts_errors_and_fails_ready(db: Session, unique: str):
    _configure(db, RATE_LIMIT_DEFAULT="1/minute")
    reset_rate_limiter("redis://127.0.0.1:1/0", key_prefix=f"jivapay-rl-test-{unique}")
    try:
        before = _sample("rate_limit_storage_errors_total", {"server": "gateway"})
        client = TestClient(_gateway_app())

        started = time.monotonic()
        statuses = [client.get("/gateway/ping").status_code for _ in range(4)]
        elapsed = time.monotonic() - started
        ready = client.get("/ready")
    finally:
        reset_rate_limiter()

    assert statuses == [200, 200, 200, 200]
    assert _sample("rate_limit_storage_errors_total", {"server": "gateway"}) >= before + 1
    assert elapsed < 3.0
    assert ready.status_code == 503
    assert ready.json()["checks"]["rate_limiter"] != "ok"
    assert "rate_limiter" in ready.json()["failed"]


def test_blocked_client_is_refused_by_route_dependencies_too(db: Session, limiter_prefix: str):
    limiter = get_rate_limiter()
    redis_client = limiter.storage.get_connection()  # type: ignore[attr-defined]
    redis_client.set(f"{limiter_prefix}:blocked:ip:testclient", "1", ex=120)
    client = TestClient(build_app(Role.MERCHANT))

    refused = client.post("/merchant/auth/token", data={"username": "x@y.z", "password": "p"})

    _assert_problem(refused, "client_blocked")
    assert 100 < int(refused.headers["Retry-After"]) <= 120


# ---------------------------------------------------------------------- configuration


def test_rate_limit_dependency_rejects_unknown_setting_and_key_kind():
    with pytest.raises(Exception, match="unknown setting"):
        rate_limit("RATE_LIMIT_NOPE")
    with pytest.raises(ValueError):
        rate_limit("RATE_LIMIT_LOGIN", key="cookie")
    assert KeyKind("store") is KeyKind.STORE
    assert ClientBlocked.code == "client_blocked"


def test_forwarded_headers_are_trusted_only_from_listed_proxies():
    assert proxy_options("") == {"proxy_headers": False}
    assert proxy_options(" 10.0.0.5 , 10.1.0.0/16 ") == {
        "proxy_headers": True,
        "forwarded_allow_ips": ["10.0.0.5", "10.1.0.0/16"],
    }
