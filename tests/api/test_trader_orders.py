"""Trader order endpoints over HTTP: own orders only, confirm/cancel/dispute, the work switch."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jivapay.database.models import AuditLog, BalanceTrader, OrderHistory, Trader
from jivapay.enums import OrderType, Role
from jivapay.security import create_access_token
from jivapay.servers.app_factory import build_app
from jivapay.services.order_processor import process_incoming_order
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader
from tests.sample_files import pdf_bytes

D = Decimal


@pytest.fixture
def client(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.api_routers.common.trader_orders import router

    return TestClient(build_app(Role.TRADER, routers=[router]))


def _auth(trader: Trader) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_access_token(trader.user_id, Role.TRADER)}"}


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    store = make_store(db, ref, balance=D("1000"))
    mine = make_trader(db, ref)
    other = make_trader(db, ref, priority=9)
    make_requisite(db, mine, ref, number="2200123412341234")
    make_requisite(db, other, ref)
    return ref, store, mine, other


def test_list_and_get_own_orders_only_with_masked_numbers(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, mine, other = world
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("500.00")).id)
    order = db.get(OrderHistory, res.order_id)
    assert order.trader_id == mine.id

    r = client.get("/trader/orders", headers=_auth(mine))
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 1 and body["items"][0]["order_id"] == order.public_id
    item = body["items"][0]
    assert item["amount_fiat"] == "500.00" and item["amount_crypto"] == "10.00000000"
    assert item["requisite"]["number_masked"] == "**** 1234"
    assert "2200123412341234" not in r.text

    assert client.get("/trader/orders", headers=_auth(other)).json()["total"] == 0
    r = client.get(f"/trader/orders/{order.public_id}", headers=_auth(other))
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.post(f"/trader/orders/{order.public_id}/confirm", headers=_auth(other))
    assert r.status_code == 404

    r = client.get("/trader/orders?status=completed", headers=_auth(mine))
    assert r.json()["total"] == 0
    r = client.get("/trader/orders?status=bogus", headers=_auth(mine))
    assert r.status_code == 422


def test_list_refuses_a_reversed_date_range(client, db, world) -> None:  # type: ignore[no-untyped-def]
    """created_from after created_to is a 422 problem+json (domain section 12), as on every other
    list, not an empty page a client would read as "no orders"; equal bounds are an empty range."""
    ref, store, mine, _ = world
    process_incoming_order(make_incoming(db, store, ref).id)
    r = client.get(
        "/trader/orders?created_from=2026-11-02T00:00:00Z&created_to=2026-11-01T00:00:00Z",
        headers=_auth(mine),
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    # The bounds compare as instants: 01:00+02:00 is 23:00Z the day before, so not reversed.
    r = client.get(
        "/trader/orders?created_from=2026-11-02T01:00:00%2B02:00&created_to=2026-11-01T23:30:00Z",
        headers=_auth(mine),
    )
    assert r.status_code == 200 and r.json()["total"] == 0, r.text
    same = "created_from=2026-11-01T00:00:00Z&created_to=2026-11-01T00:00:00Z"
    r = client.get(f"/trader/orders?{same}", headers=_auth(mine))
    assert r.status_code == 200 and r.json()["total"] == 0, r.text


def test_confirm_completes_and_repeats_idempotently(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, mine, _ = world
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("500.00")).id)
    public_id = db.get(OrderHistory, res.order_id).public_id
    r = client.post(f"/trader/orders/{public_id}/confirm", headers=_auth(mine))
    assert r.status_code == 200 and r.json() == {
        "order_id": public_id,
        "status": "completed",
        "changed": True,
    }
    r = client.post(f"/trader/orders/{public_id}/confirm", headers=_auth(mine))
    assert r.json()["changed"] is False
    r = client.post(
        f"/trader/orders/{public_id}/cancel", headers=_auth(mine), json={"reason": "late"}
    )
    assert r.status_code == 409 and r.json()["code"] == "invalid_status_transition"
    db.expire_all()
    deposit = db.scalars(select(BalanceTrader).where(BalanceTrader.trader_id == mine.id)).one()
    assert deposit.frozen == 0 and deposit.balance == D("10000") - D("9.7")


def test_cancel_and_dispute(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, mine, _ = world
    a = process_incoming_order(make_incoming(db, store, ref).id)
    b = process_incoming_order(make_incoming(db, store, ref).id)
    pa = db.get(OrderHistory, a.order_id).public_id
    pb = db.get(OrderHistory, b.order_id).public_id
    r = client.post(
        f"/trader/orders/{pa}/cancel", headers=_auth(mine), json={"reason": "card blocked"}
    )
    assert r.json()["status"] == "canceled"
    r = client.post(
        f"/trader/orders/{pb}/dispute", headers=_auth(mine), json={"reason": "wrong amount"}
    )
    assert r.json()["status"] == "disputed"
    r = client.post(f"/trader/orders/{pb}/dispute", headers=_auth(mine), json={"unknown": 1})
    assert r.status_code == 422


def test_payout_beneficiary_number_shown_to_assigned_trader_while_open(
    client, db, world, s3_endpoint
) -> None:
    ref, store, mine, _ = world
    res = process_incoming_order(make_incoming(db, store, ref, order_type=OrderType.PAYOUT).id)
    public_id = db.get(OrderHistory, res.order_id).public_id
    view = client.get(f"/trader/orders/{public_id}", headers=_auth(mine)).json()
    assert view["beneficiary"]["number"] == "4111111111111111"
    # A PayOut is confirmed with the receipt of the transfer (tests/api/test_receipts.py).
    receipt = {"receipt": ("sent.pdf", pdf_bytes(), "application/pdf")}
    r = client.post(f"/trader/orders/{public_id}/confirm", headers=_auth(mine), files=receipt)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    view = client.get(f"/trader/orders/{public_id}", headers=_auth(mine)).json()
    assert (
        view["beneficiary"]["number"] is None
        and view["beneficiary"]["number_masked"] == "**** 1111"
    )


def test_work_switch_and_auth(client, db, world) -> None:  # type: ignore[no-untyped-def]
    _, _, mine, _ = world
    r = client.post("/trader/work", headers=_auth(mine), json={"in_work": False})
    assert r.status_code == 200 and r.json() == {"in_work": False, "changed": True}
    db.expire_all()
    assert db.get(Trader, mine.id).in_work is False
    [audit] = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "trader.in_work_changed", AuditLog.target_id == str(mine.id)
        )
    ).all()
    assert audit.ip_address is not None and audit.user_id == mine.user_id
    assert audit.details == {"old": {"in_work": True}, "new": {"in_work": False}}
    r = client.post("/trader/work", headers=_auth(mine), json={"in_work": False})
    assert r.json() == {"in_work": False, "changed": False}
    for bad in ({"in_work": "no"}, {"in_work": 0}, {"in_work": None}, {}):
        assert client.post("/trader/work", headers=_auth(mine), json=bad).status_code == 422
    db.expire_all()
    assert db.get(Trader, mine.id).in_work is False
    assert client.get("/trader/orders").status_code == 401
    merchant_token = create_access_token(mine.user_id, Role.MERCHANT)
    r = client.get("/trader/orders", headers={"Authorization": f"Bearer {merchant_token}"})
    assert r.status_code in (401, 403)
