"""Merchant store routes over HTTP: create (secrets once), list/read (masked), change, deactivate,
rotate keys (the old pair 401 through the real gateway signature check) and the callback secret;
another merchant's store is 404; bad input is problem+json and writes nothing."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from jivapay.database.models import AuditLog, MerchantStore
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app
from tests.api.merchant_support import audit_count, bearer, count, make_merchant
from tests.factories import StoreWorld, gateway_headers, make_reference

D = Decimal


@pytest.fixture
def client(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.servers.merchant.server import ROUTERS

    return TestClient(build_app(Role.MERCHANT, routers=ROUTERS))


@pytest.fixture
def gateway(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.servers.gateway.server import ROUTERS

    return TestClient(build_app("gateway", routers=ROUTERS))


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    me, other = make_merchant(db), make_merchant(db)
    return ref, bearer(me.user_id, Role.MERCHANT), bearer(other.user_id, Role.MERCHANT), me


def _payload(ref, **over):  # type: ignore[no-untyped-def]
    body = {
        "store_name": "My shop",
        "fiat_currency": ref.fiat.code,
        "crypto_currency": ref.crypto.code,
        "lower_limit": "100.00",
        "upper_limit": "50000",
        "callback_url": "https://shop.example.com/hooks",
        "pay_out_enabled": True,
        "order_ttl_minutes": 20,
    }
    body.update(over)
    return body


def test_create_shows_secrets_once_and_is_not_live(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, me = world
    r = client.post("/merchant/stores", json=_payload(ref), headers=mine)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["private_api_key"].startswith("sk_")
    assert created["callback_secret"].startswith("whsec_")
    assert created["private_api_key_last4"] == created["private_api_key"][-4:]
    assert (created["access"], created["trafic_access"], created["commission"]) == (
        True,
        False,
        None,
    )
    assert created["takes_orders"] is False
    assert created["not_live_reasons"] == ["traffic_disabled", "commission_missing"]
    assert (created["lower_limit"], created["upper_limit"]) == ("100.00", "50000.00")
    assert created["merchant_id"] == me.id

    row = db.get(MerchantStore, created["id"])
    assert row.private_api_key == created["private_api_key"]  # decrypted by the column type
    raw = db.execute(
        text("SELECT private_api_key FROM merchant_stores WHERE id = :id"), {"id": row.id}
    ).scalar_one()
    assert created["private_api_key"] not in raw  # encrypted at rest

    for r in (
        client.get("/merchant/stores", headers=mine),
        client.get(f"/merchant/stores/{row.id}", headers=mine),
    ):
        assert r.status_code == 200
        assert created["private_api_key"] not in r.text and created["callback_secret"] not in r.text
    listed = client.get("/merchant/stores", headers=mine).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == row.id
    audit = db.scalars(select(AuditLog).where(AuditLog.action == "store.create")).one()
    assert audit.user_id == me.user_id and created["private_api_key"] not in json.dumps(
        audit.details
    )


def test_foreign_store_is_404_everywhere(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, theirs, _ = world
    store_id = client.post("/merchant/stores", json=_payload(ref), headers=mine).json()["id"]
    assert client.get("/merchant/stores", headers=theirs).json()["total"] == 0
    before = audit_count(db)
    for method, path, body in (
        ("GET", f"/merchant/stores/{store_id}", None),
        ("PATCH", f"/merchant/stores/{store_id}", {"store_name": "x"}),
        ("POST", f"/merchant/stores/{store_id}/deactivate", None),
        ("POST", f"/merchant/stores/{store_id}/keys/rotate", None),
        ("POST", f"/merchant/stores/{store_id}/callback-secret/rotate", None),
    ):
        r = client.request(method, path, json=body, headers=theirs)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert audit_count(db) == before
    assert db.get(MerchantStore, store_id).store_name == "My shop"


@pytest.mark.parametrize(
    "bad",
    [
        {"lower_limit": 100.555},  # a JSON number with three places: refused, not rounded
        {"lower_limit": "100.123"},  # three places
        {"lower_limit": "-1"},
        {"lower_limit": "900", "upper_limit": "100"},
        {"fiat_currency": "XXX"},
        {"crypto_currency": "NOPE"},
        {"callback_url": "ftp://shop.example.com/"},
        {"callback_url": "http://127.0.0.1:9000/hook"},  # private unless allowed (see below)
        {"order_ttl_minutes": 0},
        {"trafic_access": True},
        {"access": False},
        {"store_name": ""},
        {"unknown": 1},
    ],
)
def test_create_bad_input_writes_nothing(client, db, world, bad, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from jivapay.config import get_settings

    monkeypatch.setattr(get_settings(), "CALLBACK_ALLOW_PRIVATE_NETWORKS", False)
    ref, mine, _, _ = world
    stores, audits = count(db, MerchantStore), audit_count(db)
    r = client.post("/merchant/stores", json=_payload(ref, **bad), headers=mine)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (count(db, MerchantStore), audit_count(db)) == (stores, audits)


def test_limits_as_json_numbers_are_read_exactly(client, db, world) -> None:  # type: ignore[no-untyped-def]
    """Money sent as a JSON number is read as written, never through a float."""
    ref, mine, _, _ = world

    def create(lower: str, upper: str) -> Any:
        document = json.dumps(_payload(ref, lower_limit="@lower", upper_limit="@upper"))
        document = document.replace('"@lower"', lower).replace('"@upper"', upper)
        return client.post(
            "/merchant/stores",
            content=document,
            headers={**mine, "Content-Type": "application/json"},
        )

    r = create("100.05", "49999.99")
    assert r.status_code == 201, r.text
    store = db.get(MerchantStore, r.json()["id"])
    assert (store.lower_limit, store.upper_limit) == (Decimal("100.05"), Decimal("49999.99"))
    before = count(db, MerchantStore)
    # A float would have made this 50000.0, accepted; it has 15 places and is refused.
    r = create("100.05", "49999.999999999999999")
    assert r.status_code == 422, r.text
    assert any("decimal places" in e["msg"] for e in r.json()["errors"]), r.text
    assert count(db, MerchantStore) == before


def test_patch_changes_settings_and_refuses_admin_fields(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, _ = world
    store_id = client.post("/merchant/stores", json=_payload(ref), headers=mine).json()["id"]
    r = client.patch(
        f"/merchant/stores/{store_id}",
        json={"store_name": "Renamed", "upper_limit": "60000.50", "callback_url": None},
        headers=mine,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["store_name"], body["upper_limit"], body["callback_url"], body["changed"]) == (
        "Renamed",
        "60000.50",
        None,
        True,
    )
    audit = db.scalars(select(AuditLog).where(AuditLog.action == "store.update")).one()
    assert audit.details["old"]["store_name"] == "My shop"
    assert audit.details["new"]["upper_limit"] == "60000.50"
    audits = audit_count(db)
    r = client.patch(f"/merchant/stores/{store_id}", json={"store_name": "Renamed"}, headers=mine)
    assert r.status_code == 200 and r.json()["changed"] is False
    assert audit_count(db) == audits

    for bad in (
        {"trafic_access": True},
        {"access": True},
        {"fiat_currency": ref.fiat.code},
        {"commission_payin": "1"},
        {"private_api_key": "sk_mine"},
        {"lower_limit": "70000"},  # above the stored upper limit
        {"store_name": None},
        {"order_ttl_minutes": "15"},
    ):
        r = client.patch(f"/merchant/stores/{store_id}", json=bad, headers=mine)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    db.expire_all()
    row = db.get(MerchantStore, store_id)
    assert (row.trafic_access, row.lower_limit) == (False, D("100.00"))
    assert audit_count(db) == audits


def test_deactivate_is_idempotent(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, _ = world
    store_id = client.post("/merchant/stores", json=_payload(ref), headers=mine).json()["id"]
    r = client.post(f"/merchant/stores/{store_id}/deactivate", headers=mine)
    assert r.status_code == 200 and (r.json()["access"], r.json()["changed"]) == (False, True)
    assert "access_disabled" in r.json()["not_live_reasons"]
    r = client.post(f"/merchant/stores/{store_id}/deactivate", headers=mine)
    assert r.json()["changed"] is False
    assert db.scalar(select(count_actions()).where(AuditLog.action == "store.deactivate")) == 1


def count_actions():  # type: ignore[no-untyped-def]
    from sqlalchemy import func

    return func.count(AuditLog.id)


def test_key_rotation_stops_the_old_key_at_the_gateway(client, gateway, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, _ = world
    created = client.post("/merchant/stores", json=_payload(ref), headers=mine).json()
    store = db.get(MerchantStore, created["id"])
    old = StoreWorld(store, None, created["public_api_key"], created["private_api_key"])  # type: ignore[arg-type]
    path = "/gateway/reference/methods"
    assert gateway.get(path, headers=gateway_headers(old, "GET", path)).status_code == 200

    r = client.post(f"/merchant/stores/{store.id}/keys/rotate", headers=mine)
    assert r.status_code == 200, r.text
    keys = r.json()
    assert keys["public_api_key"] != old.public_key and keys["private_api_key"] != old.private_key
    new = StoreWorld(store, None, keys["public_api_key"], keys["private_api_key"])  # type: ignore[arg-type]

    r = gateway.get(path, headers=gateway_headers(old, "GET", path))
    assert r.status_code == 401 and r.json()["code"] == "invalid_signature"
    # The new public key with the old private key is refused too.
    mixed = StoreWorld(store, None, keys["public_api_key"], old.private_key)  # type: ignore[arg-type]
    assert gateway.get(path, headers=gateway_headers(mixed, "GET", path)).status_code == 401
    assert gateway.get(path, headers=gateway_headers(new, "GET", path)).status_code == 200

    view = client.get(f"/merchant/stores/{store.id}", headers=mine).json()
    assert view["private_api_key_last4"] == keys["private_api_key"][-4:]
    assert keys["private_api_key"] not in json.dumps(view)
    assert view["keys_rotated_at"] is not None


def test_callback_secret_rotation(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, _ = world
    created = client.post("/merchant/stores", json=_payload(ref), headers=mine).json()
    r = client.post(f"/merchant/stores/{created['id']}/callback-secret/rotate", headers=mine)
    assert r.status_code == 200
    secret = r.json()["callback_secret"]
    assert secret.startswith("whsec_") and secret != created["callback_secret"]
    db.expire_all()
    assert db.get(MerchantStore, created["id"]).callback_secret == secret
    assert secret not in client.get(f"/merchant/stores/{created['id']}", headers=mine).text


def test_other_roles_and_anonymous_are_refused(client, db, world) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import make_trader

    ref, _, _, _ = world
    trader = make_trader(db, ref)
    assert client.get("/merchant/stores").status_code == 401
    stores = count(db, MerchantStore)
    r = client.get("/merchant/stores", headers=bearer(trader.user_id, Role.TRADER))
    assert r.status_code == 403
    r = client.post(
        "/merchant/stores", json=_payload(ref), headers=bearer(trader.user_id, Role.TRADER)
    )
    assert r.status_code == 403
    assert count(db, MerchantStore) == stores
