"""Staff store controls over HTTP on the admin and support servers: PATCH (traffic needs its own
grant and a commission; the only way a store goes live), PUT commission (new orders get it, open
orders keep theirs), key rotation (old key 401 at the gateway); grants decide, a missing store is
404, bad input is problem+json and writes nothing."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jivapay.database.models import AuditLog, IncomingOrder, MerchantStore, StoreCommission
from jivapay.enums import Role
from jivapay.permissions import Permission
from jivapay.servers.app_factory import build_app
from tests.api.merchant_support import audit_count, bearer, count, make_merchant, make_staff
from tests.factories import (
    StoreWorld,
    gateway_headers,
    make_bank_method,
    make_reference,
)

D = Decimal
ALL_STORE_GRANTS = [
    Permission.STORES_EDIT_ALL,
    Permission.STORES_TRAFFIC_ALL,
    Permission.STORES_KEYS_ALL,
    Permission.STORE_COMMISSIONS_EDIT_ALL,
]


@pytest.fixture
def apps(db):  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import ROUTERS as ADMIN
    from jivapay.servers.gateway.server import ROUTERS as GATEWAY
    from jivapay.servers.merchant.server import ROUTERS as MERCHANT
    from jivapay.servers.support.server import ROUTERS as SUPPORT

    return (
        TestClient(build_app(Role.ADMIN, routers=ADMIN)),
        TestClient(build_app(Role.SUPPORT, routers=SUPPORT)),
        TestClient(build_app(Role.MERCHANT, routers=MERCHANT)),
        TestClient(build_app("gateway", routers=GATEWAY)),
    )


@pytest.fixture
def world(db, apps):  # type: ignore[no-untyped-def]
    _, _, merchant_api, _ = apps
    ref = make_reference(db, rate=D("50"))
    make_bank_method(db, ref)
    merchant = make_merchant(db)
    mauth = bearer(merchant.user_id, Role.MERCHANT)
    created = merchant_api.post(
        "/merchant/stores",
        json={
            "store_name": "Shop",
            "fiat_currency": ref.fiat.code,
            "crypto_currency": ref.crypto.code,
            "lower_limit": "10",
            "upper_limit": "10000",
        },
        headers=mauth,
    ).json()
    admin = make_staff(db, Role.ADMIN, [str(p) for p in ALL_STORE_GRANTS])
    return ref, created, mauth, bearer(admin.user_id, Role.ADMIN)


def _payin(gateway: TestClient, world: StoreWorld, fiat: str, key: str):  # type: ignore[no-untyped-def]
    path = "/gateway/payin/init"
    body = json.dumps(
        {"merchant_order_id": key, "amount_fiat": "100.00", "fiat_currency": fiat}
    ).encode()
    headers = gateway_headers(world, "POST", path, body, idempotency_key=key)
    return gateway.post(path, content=body, headers=headers)


def test_store_goes_live_only_through_admin(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    admin_api, _, merchant_api, gateway = apps
    ref, created, mauth, aauth = world
    sid = created["id"]
    store = db.get(MerchantStore, sid)
    keys = StoreWorld(store, None, created["public_api_key"], created["private_api_key"])  # type: ignore[arg-type]

    r = _payin(gateway, keys, ref.fiat.code, "o-1")
    assert r.status_code == 403 and r.json()["code"] == "store_traffic_disabled"

    audits = audit_count(db)
    r = admin_api.patch(f"/admin/stores/{sid}", json={"trafic_access": True}, headers=aauth)
    assert r.status_code == 409 and r.json()["code"] == "commission_missing"
    assert audit_count(db) == audits
    db.expire_all()
    assert db.get(MerchantStore, sid).trafic_access is False

    r = admin_api.put(
        f"/admin/stores/{sid}/commission",
        json={"commission_payin": "4.5", "commission_payout": "2"},
        headers=aauth,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["commission_payin"], r.json()["changed"]) == ("4.5000", True)
    r = admin_api.put(
        f"/admin/stores/{sid}/commission",
        json={"commission_payin": "4.50", "commission_payout": "2.0"},
        headers=aauth,
    )
    assert r.json()["changed"] is False
    assert count(db, StoreCommission) == 1

    r = admin_api.patch(
        f"/admin/stores/{sid}",
        json={"trafic_access": True, "upper_limit": "20000"},
        headers=aauth,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["takes_orders"], r.json()["changed"]) == (True, True)
    view = merchant_api.get(f"/merchant/stores/{sid}", headers=mauth).json()
    assert (view["trafic_access"], view["upper_limit"], view["not_live_reasons"]) == (
        True,
        "20000.00",
        [],
    )
    r = _payin(gateway, keys, ref.fiat.code, "o-2")
    assert r.status_code == 201, r.text
    assert r.json()["store_commission"] == "0.09000000"  # 2 USDT x 4.5 %

    # A new rate applies to new orders; the open one keeps the rate fixed at its intake.
    admin_api.put(
        f"/admin/stores/{sid}/commission",
        json={"commission_payin": "10", "commission_payout": "2"},
        headers=aauth,
    )
    first = db.scalars(select(IncomingOrder).where(IncomingOrder.store_id == sid)).one()
    assert first.store_commission_rate == D("4.5")
    r = _payin(gateway, keys, ref.fiat.code, "o-3")
    assert r.json()["store_commission"] == "0.20000000"

    audit = db.scalars(select(AuditLog).where(AuditLog.action == "store.admin_update")).one()
    assert audit.details["old"]["trafic_access"] is False
    assert audit.details["new"]["trafic_access"] is True

    r = admin_api.patch(f"/admin/stores/{sid}", json={"trafic_access": True}, headers=aauth)
    assert r.json()["changed"] is False


def test_admin_key_rotation_stops_old_key(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    admin_api, _, _, gateway = apps
    _ref, created, _, aauth = world
    store = db.get(MerchantStore, created["id"])
    old = StoreWorld(store, None, created["public_api_key"], created["private_api_key"])  # type: ignore[arg-type]
    path = "/gateway/reference/methods"
    assert gateway.get(path, headers=gateway_headers(old, "GET", path)).status_code == 200
    r = admin_api.post(f"/admin/stores/{store.id}/keys/rotate", headers=aauth)
    assert r.status_code == 200
    new = StoreWorld(store, None, r.json()["public_api_key"], r.json()["private_api_key"])  # type: ignore[arg-type]
    assert gateway.get(path, headers=gateway_headers(old, "GET", path)).status_code == 401
    assert gateway.get(path, headers=gateway_headers(new, "GET", path)).status_code == 200
    audit = db.scalars(select(AuditLog).where(AuditLog.action == "store.keys_rotated")).one()
    assert r.json()["private_api_key"] not in json.dumps(audit.details)


def test_grants_decide_on_both_servers(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    admin_api, support_api, _merchant_api, _ = apps
    _ref, created, mauth, _ = world
    sid = created["id"]
    editor = make_staff(db, Role.ADMIN, [Permission.STORES_EDIT_ALL])
    support = make_staff(db, Role.SUPPORT, ["stores:*", "store_commissions:*"])
    reader = make_staff(db, Role.SUPPORT, [Permission.STORES_VIEW_ALL])
    eauth = bearer(editor.user_id, Role.ADMIN)
    sauth = bearer(support.user_id, Role.SUPPORT)
    rauth = bearer(reader.user_id, Role.SUPPORT)

    audits = audit_count(db)
    # stores:edit:all without stores:traffic:all: limits yes, traffic no.
    r = admin_api.patch(f"/admin/stores/{sid}", json={"trafic_access": False}, headers=eauth)
    assert r.status_code == 403
    assert admin_api.post(f"/admin/stores/{sid}/keys/rotate", headers=eauth).status_code == 403
    r = admin_api.put(
        f"/admin/stores/{sid}/commission",
        json={"commission_payin": "1", "commission_payout": "1"},
        headers=eauth,
    )
    assert r.status_code == 403
    for path, method in (
        (f"/support/stores/{sid}", "PATCH"),
        (f"/support/stores/{sid}/keys/rotate", "POST"),
    ):
        r = support_api.request(method, path, json={"order_ttl_minutes": 30}, headers=rauth)
        assert r.status_code == 403, path
    # Tokens of another role are refused by the server's role guard.
    r = admin_api.patch(f"/admin/stores/{sid}", json={"order_ttl_minutes": 30}, headers=sauth)
    assert r.status_code in (401, 403)
    r = admin_api.patch(f"/admin/stores/{sid}", json={"order_ttl_minutes": 30}, headers=mauth)
    assert r.status_code in (401, 403)
    assert audit_count(db) == audits

    r = admin_api.patch(f"/admin/stores/{sid}", json={"order_ttl_minutes": 30}, headers=eauth)
    assert r.status_code == 200 and r.json()["order_ttl_minutes"] == 30
    r = support_api.put(
        f"/support/stores/{sid}/commission",
        json={"commission_payin": "3", "commission_payout": "1"},
        headers=sauth,
    )
    assert r.status_code == 200
    r = support_api.patch(f"/support/stores/{sid}", json={"trafic_access": True}, headers=sauth)
    assert r.status_code == 200 and r.json()["trafic_access"] is True
    assert support_api.patch("/support/stores/999999", json={}, headers=sauth).status_code == 404


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("", "PATCH", {"trafic_access": "yes"}),
        ("", "PATCH", {"trafic_access": None}),
        ("", "PATCH", {"lower_limit": "5000", "upper_limit": "100"}),
        ("", "PATCH", {"lower_limit": "20000"}),  # above the stored upper limit
        ("", "PATCH", {"upper_limit": 1000.505}),  # three places, not rounded
        ("", "PATCH", {"order_ttl_minutes": 0}),
        ("", "PATCH", {"store_name": "not an admin field"}),
        ("/commission", "PUT", {"commission_payin": "100", "commission_payout": "1"}),
        ("/commission", "PUT", {"commission_payin": "-1", "commission_payout": "1"}),
        ("/commission", "PUT", {"commission_payin": "1.00001", "commission_payout": "1"}),
        ("/commission", "PUT", {"commission_payin": 1.00001, "commission_payout": "1"}),
        ("/commission", "PUT", {"commission_payin": "1"}),
    ],
)
def test_bad_input_writes_nothing(apps, db, world, path, method, body) -> None:  # type: ignore[no-untyped-def]
    admin_api, _, _, _ = apps
    _, created, _, aauth = world
    sid = created["id"]
    before = (audit_count(db), count(db, StoreCommission))
    r = admin_api.request(method, f"/admin/stores/{sid}{path}", json=body, headers=aauth)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (audit_count(db), count(db, StoreCommission)) == before
    db.expire_all()
    row = db.get(MerchantStore, sid)
    assert (row.trafic_access, row.lower_limit, row.upper_limit, row.order_ttl_minutes) == (
        False,
        D("10.00"),
        D("10000.00"),
        15,
    )
