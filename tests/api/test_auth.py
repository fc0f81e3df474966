"""Logins, bearer-token principals, role and permission guards, and store request signatures,
through a small FastAPI app on the real database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.common.auth import login_path, login_router
from jivapay.api_routers.common.me import me_router
from jivapay.api_routers.deps import CurrentPrincipal, CurrentStore, DbSession, PageParams
from jivapay.database.models import (
    AuditLog,
    CryptoCurrency,
    FiatCurrency,
    MerchantStore,
    User,
)
from jivapay.database.utils import db_session_dependency
from jivapay.enums import Role
from jivapay.permissions import template_permissions
from jivapay.security import (
    SIGNATURE_TOLERANCE_SECONDS,
    Principal,
    compute_signature,
    create_access_token,
    generate_api_key_pair,
    generate_callback_secret,
)
from jivapay.servers.exception_handlers import PROBLEM_JSON, register_exception_handlers
from jivapay.services.auth_service import create_user

PASSWORD = "s3cret-pass-word"


class EchoIn(BaseModel):
    amount: str


def _test_app() -> FastAPI:
    app = FastAPI()
    register_exception_handlers(app)
    for role in Role:
        app.include_router(login_router(role))
        app.include_router(me_router(role))

    extra = APIRouter()

    @extra.get("/admin/session-shared")
    def session_shared(principal: CurrentPrincipal, session: DbSession) -> dict[str, Any]:
        # The principal dependency queried the user: only the same session is already in a transaction.
        return {"shared": session.in_transaction()}

    @extra.get("/admin/session-separate")
    def session_separate(
        principal: CurrentPrincipal,
        session: Annotated[
            Session, Depends(db_session_dependency, scope="function", use_cache=False)
        ],
    ) -> dict[str, Any]:
        return {"shared": session.in_transaction()}

    @extra.get("/admin/settings")
    def settings_view(
        principal: Annotated[Principal, Depends(require_permission("settings:edit:all"))],
    ) -> dict[str, Any]:
        return {"ok": principal.user_id}

    @extra.get("/admin/stores/{id}/orders")
    def store_orders(
        id: int,
        principal: Annotated[Principal, Depends(require_permission("orders:view:store:{id}"))],
        page: PageParams,
    ) -> dict[str, Any]:
        return {"store": id, "limit": page.limit, "offset": page.offset}

    @extra.post("/gateway/echo")
    def echo(store: CurrentStore, body: EchoIn, request: Request) -> dict[str, Any]:
        return {
            "store_id": store.store_id,
            "merchant_id": store.merchant_id,
            "amount": body.amount,
            "state_store": request.state.store.store_id,
        }

    @extra.get("/gateway/ping")
    def ping(store: CurrentStore) -> dict[str, Any]:
        return {"store_id": store.store_id}

    app.include_router(extra)
    return app


@pytest.fixture
def client(db: Session) -> Iterator[TestClient]:
    with TestClient(_test_app()) as c:
        yield c


def _user(db: Session, unique: str, role: Role, **kw: Any) -> User:
    user = create_user(
        db, email=f"{role.value}-{unique}@Example.COM", password=PASSWORD, role=role, **kw
    )
    db.flush()
    return user


def _login(client: TestClient, role: Role, email: str, password: str) -> Any:
    if role == Role.SUPPORT:
        return client.post(login_path(role), json={"email": email, "password": password})
    return client.post(login_path(role), data={"username": email, "password": password})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = resp.json()
    assert body["code"] == code
    assert body["status"] == status
    if status == 401 and body["code"] == "invalid_signature":
        # Store signatures are no HTTP authentication scheme: no Bearer challenge.
        assert "www-authenticate" not in resp.headers
    elif status == 401:
        assert resp.headers["www-authenticate"] == "Bearer"
    return body


# --------------------------------------------------------------------------- login


@pytest.mark.parametrize("role", list(Role))
def test_login_succeeds_for_each_role_and_me_answers(
    client: TestClient, db: Session, unique: str, role: Role
) -> None:
    template = {"admin": "admin_limited", "support": "support_orders", "teamlead": "teamlead"}
    user = _user(db, unique, role, template=template.get(role.value))
    resp = _login(client, role, f"{role.value}-{unique}@example.com", PASSWORD)
    assert resp.status_code == 200, resp.text
    token = resp.json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] > 0

    me = client.get(f"/{role.value}/me", headers=_bearer(token["access_token"]))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["id"] == user.id
    assert body["email"] == f"{role.value}-{unique}@example.com"
    assert body["role"] == role.value
    profile = getattr(user, role.value)
    assert body["profile_id"] == profile.id
    expected = template_permissions(template[role.value]) if role.value in template else []
    assert body["permissions"] == expected

    db.refresh(user)
    assert user.last_login_at is not None
    ok = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "auth.login_succeeded", AuditLog.user_id == user.id
        )
    ).all()
    assert len(ok) == 1


def test_support_takes_the_oauth2_form_too_and_merchant_rejects_json(
    client: TestClient, db: Session, unique: str
) -> None:
    # domain §12: one client logs in everywhere; support keeps its JSON login as well.
    support = _user(db, unique, Role.SUPPORT)
    form = {"username": support.email, "password": PASSWORD}
    for path in ("/support/auth/token", "/support/auth/login"):
        resp = client.post(path, data=form)
        assert resp.status_code == 200, (path, resp.text)
        assert resp.json()["token_type"] == "bearer"
    resp = client.post("/support/auth/login", json={"email": support.email, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    resp = client.post("/support/auth/token", data={"username": support.email, "password": "no"})
    _assert_problem(resp, 401, resp.json()["code"])
    resp = client.post("/support/auth/login", data={"username": "x"})  # no password
    _assert_problem(resp, 422, "validation_failed")
    resp = client.post("/support/auth/login", json={"email": "x@example.com", "pw": "y"})
    _assert_problem(resp, 422, "validation_failed")
    resp = client.post("/merchant/auth/token", json={"email": "x", "password": "y"})
    _assert_problem(resp, 422, "validation_failed")


def test_every_refusal_looks_the_same_and_is_audited(
    client: TestClient, db: Session, unique: str
) -> None:
    merchant = _user(db, unique, Role.MERCHANT)
    inactive = create_user(
        db, email=f"off-{unique}@example.com", password=PASSWORD, role=Role.TRADER
    )
    inactive.is_active = False
    db.flush()
    trader_email = f"off-{unique}@example.com"
    merchant_email = f"merchant-{unique}@example.com"

    attempts = {
        "wrong_password": (Role.MERCHANT, merchant_email, "not-the-password"),
        "unknown_email": (Role.MERCHANT, f"nobody-{unique}@example.com", PASSWORD),
        "wrong_role": (Role.TRADER, merchant_email, PASSWORD),
        "inactive_user": (Role.TRADER, trader_email, PASSWORD),
    }
    bodies = []
    for role, email, password in attempts.values():
        resp = _login(client, role, email, password)
        body = _assert_problem(resp, 401, "authentication_failed")
        assert body["detail"] == "Incorrect email or password"
        body.pop("request_id", None)
        body.pop("instance", None)  # the login path differs by role, nothing else may
        bodies.append(body)
    assert all(b == bodies[0] for b in bodies)

    rows = db.scalars(
        select(AuditLog).where(AuditLog.action == "auth.login_failed").order_by(AuditLog.id)
    ).all()
    mine = [r for r in rows if unique in r.details.get("email", "")]
    assert [r.details["reason"] for r in mine] == list(attempts)
    assert mine[0].user_id == merchant.id
    assert mine[1].user_id is None
    assert mine[3].user_id == inactive.id
    assert all(r.level == "warning" for r in mine)
    dumped = json.dumps([r.details for r in mine])
    assert PASSWORD not in dumped and "not-the-password" not in dumped
    # A failed login does not count as a login.
    db.refresh(merchant)
    assert merchant.last_login_at is None


def test_email_is_case_insensitive(client: TestClient, db: Session, unique: str) -> None:
    _user(db, unique, Role.MERCHANT)
    resp = _login(client, Role.MERCHANT, f"  MERCHANT-{unique}@example.com", PASSWORD)
    assert resp.status_code == 200


# --------------------------------------------------------------------------- bearer tokens


def test_user_deactivated_after_issue_is_refused(
    client: TestClient, db: Session, unique: str
) -> None:
    user = _user(db, unique, Role.TRADER)
    token = create_access_token(user.id, Role.TRADER)
    assert client.get("/trader/me", headers=_bearer(token)).status_code == 200
    user.is_active = False
    db.flush()
    resp = client.get("/trader/me", headers=_bearer(token))
    _assert_problem(resp, 401, "account_disabled")


def test_token_of_another_role_is_refused(client: TestClient, db: Session, unique: str) -> None:
    merchant = _user(db, unique, Role.MERCHANT)
    token = create_access_token(merchant.id, Role.MERCHANT)
    _assert_problem(client.get("/trader/me", headers=_bearer(token)), 403, "permission_denied")
    # A token claiming a role the user does not hold.
    forged = create_access_token(merchant.id, Role.TRADER)
    _assert_problem(client.get("/trader/me", headers=_bearer(forged)), 401, "authentication_failed")


def test_expired_garbage_and_missing_tokens(client: TestClient, db: Session, unique: str) -> None:
    user = _user(db, unique, Role.ADMIN)
    expired = create_access_token(user.id, Role.ADMIN, expires_minutes=-1)
    _assert_problem(client.get("/admin/me", headers=_bearer(expired)), 401, "token_expired")
    _assert_problem(
        client.get("/admin/me", headers=_bearer("garbage")), 401, "authentication_failed"
    )
    _assert_problem(client.get("/admin/me"), 401, "authentication_failed")
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    _assert_problem(client.get("/admin/me", headers=basic), 401, "authentication_failed")
    gone = create_access_token(10**12, Role.ADMIN)
    _assert_problem(client.get("/admin/me", headers=_bearer(gone)), 401, "authentication_failed")


def test_principal_and_route_share_the_request_session(
    client: TestClient, db: Session, unique: str
) -> None:
    user = _user(db, unique, Role.ADMIN)
    resp = client.get(
        "/admin/session-shared", headers=_bearer(create_access_token(user.id, Role.ADMIN))
    )
    assert resp.json() == {"shared": True}
    # The check can tell: a second session of the same request has not begun yet.
    resp = client.get(
        "/admin/session-separate", headers=_bearer(create_access_token(user.id, Role.ADMIN))
    )
    assert resp.json() == {"shared": False}


def test_require_permission(client: TestClient, db: Session, unique: str) -> None:
    limited = _user(db, unique, Role.ADMIN, permissions=["orders:view:store:7"])
    full = create_user(
        db,
        email=f"root-{unique}@example.com",
        password=PASSWORD,
        role=Role.ADMIN,
        template="super_admin",
    )
    db.flush()
    limited_h = _bearer(create_access_token(limited.id, Role.ADMIN))
    full_h = _bearer(create_access_token(full.id, Role.ADMIN))

    _assert_problem(client.get("/admin/settings", headers=limited_h), 403, "permission_denied")
    assert client.get("/admin/settings", headers=full_h).json() == {"ok": full.id}
    resp = client.get("/admin/stores/7/orders?limit=5", headers=limited_h)
    assert resp.json() == {"store": 7, "limit": 5, "offset": 0}
    _assert_problem(
        client.get("/admin/stores/8/orders", headers=limited_h), 403, "permission_denied"
    )
    _assert_problem(
        client.get("/admin/stores/7/orders?limit=1000", headers=limited_h), 422, "validation_failed"
    )


# --------------------------------------------------------------------------- store signatures


def _store(db: Session, unique: str, *, access: bool = True) -> tuple[MerchantStore, str]:
    merchant = _user(db, unique, Role.MERCHANT)
    fiat = FiatCurrency(code=f"F{unique[:6]}", name="Test fiat")
    crypto = CryptoCurrency(code=f"C{unique[:6]}", name="Test crypto")
    db.add_all([fiat, crypto])
    db.flush()
    public, private = generate_api_key_pair()
    store = MerchantStore(
        merchant_id=merchant.merchant.id,  # type: ignore[union-attr]
        store_name=f"store {unique}",
        crypto_currency_id=crypto.id,
        fiat_currency_id=fiat.id,
        upper_limit=Decimal("100000.00"),
        public_api_key=public,
        private_api_key=private,
        private_api_key_last4=private[-4:],
        callback_secret=generate_callback_secret(),
        access=access,
    )
    db.add(store)
    db.flush()
    return store, private


def _signed(
    store: MerchantStore,
    private: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    ts: int | None = None,
) -> dict[str, str]:
    timestamp = str(int(time.time()) if ts is None else ts)
    return {
        "X-API-Key": store.public_api_key,
        "X-Timestamp": timestamp,
        "X-Signature": compute_signature(private, timestamp, method, path, body),
        "Content-Type": "application/json",
    }


def test_valid_signature_authenticates_and_body_stays_readable(
    client: TestClient, db: Session, unique: str
) -> None:
    store, private = _store(db, unique)
    body = b'{"amount": "150.00"}'
    resp = client.post(
        "/gateway/echo",
        content=body,
        headers=_signed(store, private, "POST", "/gateway/echo", body),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "store_id": store.id,
        "merchant_id": store.merchant_id,
        "amount": "150.00",
        "state_store": store.id,
    }
    headers = _signed(store, private, "GET", "/gateway/ping?x=1")
    assert client.get("/gateway/ping?x=1", headers=headers).json() == {"store_id": store.id}


def test_bad_signature_unknown_key_and_tampering_answer_alike(
    client: TestClient, db: Session, unique: str
) -> None:
    store, private = _store(db, unique)
    body = b'{"amount": "150.00"}'
    good = _signed(store, private, "POST", "/gateway/echo", body)

    bad_sig = {**good, "X-Signature": "0" * 64}
    unknown = {**good, "X-API-Key": "pk_unknown_" + unique}
    wrong_key = _signed(store, "sk_not_the_key", "POST", "/gateway/echo", body)
    details = set()
    for headers, content in (
        (bad_sig, body),
        (unknown, body),
        (wrong_key, body),
        (good, b'{"amount": "999999.00"}'),  # body tampered after signing
    ):
        resp = client.post("/gateway/echo", content=content, headers=headers)
        details.add(_assert_problem(resp, 401, "invalid_signature")["detail"])
    assert details == {"Invalid API key or signature"}
    # Signed for another path or method.
    moved = _signed(store, private, "POST", "/gateway/other", body)
    _assert_problem(
        client.post("/gateway/echo", content=body, headers=moved), 401, "invalid_signature"
    )
    query = _signed(store, private, "GET", "/gateway/ping?x=1")
    _assert_problem(client.get("/gateway/ping?x=2", headers=query), 401, "invalid_signature")


@pytest.mark.parametrize("timestamp", ["stale", "future", "abc", "", "-5", "1.5"])
def test_stale_or_malformed_timestamp(
    client: TestClient, db: Session, unique: str, timestamp: str
) -> None:
    store, private = _store(db, unique)
    now = int(time.time())
    if timestamp in ("stale", "future"):
        # Stale only grows staler while the test runs; a future stamp shrinks towards the window,
        # so it sits a whole window beyond it and a slow machine cannot bring it back inside.
        ts = now - 301 if timestamp == "stale" else now + 2 * SIGNATURE_TOLERANCE_SECONDS
        headers = _signed(store, private, "GET", "/gateway/ping", ts=ts)
    else:
        headers = _signed(store, private, "GET", "/gateway/ping")
        headers["X-Timestamp"] = timestamp
        headers["X-Signature"] = compute_signature(private, timestamp, "GET", "/gateway/ping", b"")
    _assert_problem(client.get("/gateway/ping", headers=headers), 401, "invalid_signature")


def test_timestamp_within_tolerance_is_accepted(
    client: TestClient, db: Session, unique: str
) -> None:
    store, private = _store(db, unique)
    headers = _signed(store, private, "GET", "/gateway/ping", ts=int(time.time()) - 250)
    assert client.get("/gateway/ping", headers=headers).status_code == 200


def test_missing_headers(client: TestClient, db: Session, unique: str) -> None:
    store, private = _store(db, unique)
    full = _signed(store, private, "GET", "/gateway/ping")
    for name in ("X-API-Key", "X-Timestamp", "X-Signature"):
        headers = {k: v for k, v in full.items() if k != name}
        _assert_problem(client.get("/gateway/ping", headers=headers), 401, "invalid_signature")


def test_store_without_access_is_forbidden(client: TestClient, db: Session, unique: str) -> None:
    store, private = _store(db, unique, access=False)
    resp = client.get("/gateway/ping", headers=_signed(store, private, "GET", "/gateway/ping"))
    _assert_problem(resp, 403, "store_access_denied")
    # Without a valid signature the store's state is not revealed.
    bad = {**_signed(store, private, "GET", "/gateway/ping"), "X-Signature": "00"}
    _assert_problem(client.get("/gateway/ping", headers=bad), 401, "invalid_signature")


def test_store_of_a_deactivated_merchant_is_forbidden(
    client: TestClient, db: Session, unique: str
) -> None:
    """Deactivating a merchant stops its stores' keys with its logins; reactivating restores them."""
    store, private = _store(db, unique)
    merchant_user = db.get(User, store.merchant.user_id)
    assert merchant_user is not None
    merchant_user.is_active = False
    db.flush()
    resp = client.get("/gateway/ping", headers=_signed(store, private, "GET", "/gateway/ping"))
    _assert_problem(resp, 403, "store_access_denied")
    assert "deactivated" in resp.json()["detail"]
    bad = {**_signed(store, private, "GET", "/gateway/ping"), "X-Signature": "00"}
    _assert_problem(client.get("/gateway/ping", headers=bad), 401, "invalid_signature")
    merchant_user.is_active = True
    db.flush()
    resp = client.get("/gateway/ping", headers=_signed(store, private, "GET", "/gateway/ping"))
    assert resp.status_code == 200, resp.text


def test_real_app_factory_login_and_me(db: Session, unique: str, redis_url: str) -> None:
    """The login and me routers as the app factory mounts them (with its login rate limit)."""
    from jivapay.servers.app_factory import build_app

    user = _user(db, unique, Role.MERCHANT)
    with TestClient(build_app(Role.MERCHANT)) as real:
        resp = _login(real, Role.MERCHANT, f"merchant-{unique}@example.com", PASSWORD)
        assert resp.status_code == 200, resp.text
        me = real.get("/merchant/me", headers=_bearer(resp.json()["access_token"]))
        assert me.json()["id"] == user.id
        bad = _login(real, Role.MERCHANT, f"merchant-{unique}@example.com", "wrong")
        body = _assert_problem(bad, 401, "authentication_failed")
        assert body["request_id"]
