"""Merchant money and reporting routes over HTTP: balances per store (balance, frozen, available),
the balance history, statistics per store and type for a period, and callback deliveries with
re-send; another merchant sees none of it, bad filters are 422."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jivapay.database.base import utcnow
from jivapay.database.models import AuditLog, CallbackDelivery, OrderHistory
from jivapay.enums import OrderType, Role
from jivapay.servers.app_factory import build_app
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from tests.api.merchant_support import bearer
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

D = Decimal


@pytest.fixture
def client(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.servers.merchant.server import ROUTERS

    return TestClient(build_app(Role.MERCHANT, routers=ROUTERS))


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    mine = make_store(db, ref, balance=D("1000"))  # PayIn 5 %, PayOut 3 %
    theirs = make_store(db, ref, balance=D("7"))
    trader = make_trader(db, ref)  # PayIn 3 %
    make_requisite(db, trader, ref)
    return (
        ref,
        mine,
        theirs,
        trader,
        bearer(mine.merchant.user_id, Role.MERCHANT),
        bearer(theirs.merchant.user_id, Role.MERCHANT),
    )


def _complete(db, world, ref, trader, **kw) -> OrderHistory:  # type: ignore[no-untyped-def]
    incoming = make_incoming(db, world, ref, **kw)
    result = process_incoming_order(incoming.id)
    order = db.get(OrderHistory, result.order_id)
    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=order.public_id,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
    )
    db.flush()
    return order


def test_balances_and_history(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, trader, auth, other = world
    order = _complete(db, mine, ref, trader, amount_fiat=D("500.00"))  # C=10, fee 0.5 -> +9.5
    payout = make_incoming(db, mine, ref, order_type=OrderType.PAYOUT, amount_fiat=D("100.00"))
    # PayOut C=2, fee 3 % = 0.06: 2.06 frozen at intake

    r = client.get("/merchant/balances", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [
        {
            "store_id": mine.store.id,
            "store_name": mine.store.store_name,
            "crypto_currency": ref.crypto.code,
            "balance": "1009.50000000",
            "frozen": "2.06000000",
            "available": "1007.44000000",
        }
    ]
    r = client.get("/merchant/balances/history", headers=auth)
    items = r.json()["items"]
    assert [(i["operation"], i["amount"], i["frozen_delta"]) for i in items] == [
        ("freeze", "0.00000000", "2.06000000"),
        ("payin", "9.50000000", "0.00000000"),
        ("deposit", "1000.00000000", "0.00000000"),
    ]
    assert items[0]["order_id"] == payout.public_id and items[1]["order_id"] == order.public_id
    assert items[0]["balance_after"] == "1009.50000000" and items[0]["frozen_after"] == "2.06000000"
    r = client.get("/merchant/balances/history?operation=deposit", headers=auth)
    assert r.json()["total"] == 1

    theirs = client.get("/merchant/balances", headers=other).json()["items"]
    assert [i["balance"] for i in theirs] == ["7.00000000"]
    assert client.get("/merchant/balances/history", headers=other).json()["total"] == 1
    r = client.get(f"/merchant/balances/history?store_id={mine.store.id}", headers=other)
    assert r.json()["total"] == 0
    for bad in ("operation=steal", "created_to=soon", "offset=-1", "store_id=0"):
        r = client.get(f"/merchant/balances/history?{bad}", headers=auth)
        assert r.status_code == 422, bad


def test_statistics(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, trader, auth, other = world
    _complete(db, mine, ref, trader, amount_fiat=D("500.00"))
    _complete(db, mine, ref, trader, amount_fiat=D("250.00"))
    open_one = make_incoming(db, mine, ref, amount_fiat=D("100.00"))
    process_incoming_order(open_one.id)  # pending
    make_incoming(db, mine, ref, amount_fiat=D("100.00"))  # still new

    r = client.get("/merchant/statistics", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    rows = {(i["store_id"], i["order_type"]): i for i in body["items"]}
    assert set(rows) == {(mine.store.id, "payin"), (mine.store.id, "payout")}
    payin = rows[(mine.store.id, "payin")]
    assert payin["total_orders"] == 4
    assert {c["status"]: c["count"] for c in payin["counts_by_status"]} == {
        "new": 1,
        "pending": 1,
        "completed": 2,
    }
    assert (payin["completed_turnover_fiat"], payin["completed_turnover_crypto"]) == (
        "750.00",
        "15.00000000",
    )
    assert payin["commission_paid"] == "0.75000000"
    assert (payin["assigned_count"], payin["conversion"]) == (3, "0.6667")
    assert payin["average_completion_seconds"] is not None
    payout = rows[(mine.store.id, "payout")]
    assert (payout["total_orders"], payout["conversion"], payout["commission_paid"]) == (
        0,
        None,
        "0.00000000",
    )

    theirs = client.get("/merchant/statistics", headers=other).json()["items"]
    assert all(i["total_orders"] == 0 for i in theirs)
    # Another merchant's store answers 404 (domain section 8), as a store that does not exist.
    for store_id in (mine.store.id, 2**62):
        r = client.get(f"/merchant/statistics?store_id={store_id}", headers=other)
        assert r.status_code == 404 and r.json()["code"] == "store_not_found", r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    r = client.get(f"/merchant/statistics?store_id={mine.store.id}", headers=auth)
    assert r.status_code == 200 and {i["store_id"] for i in r.json()["items"]} == {mine.store.id}

    now = utcnow()
    past = (now - timedelta(days=400)).isoformat().replace("+00:00", "Z")
    for bad in (
        f"date_from={past}",
        "date_from=2026-02-01T00:00:00Z&date_to=2026-01-01T00:00:00Z",
        "date_to=never",
    ):
        r = client.get(f"/merchant/statistics?{bad}", headers=auth)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = client.get(
        "/merchant/statistics?date_from=2000-01-01T00:00:00Z&date_to=2000-12-31T00:00:00Z",
        headers=auth,
    )
    assert r.status_code == 200
    assert all(i["total_orders"] == 0 for i in r.json()["items"])


def test_callbacks_list_and_resend(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _theirs, trader, auth, other = world
    mine.store.callback_url = "http://127.0.0.1:9/hook"
    db.flush()
    order = _complete(db, mine, ref, trader)
    r = client.get("/merchant/callbacks", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 2  # order.pending, order.completed
    assert {i["event_type"] for i in body["items"]} == {"order.pending", "order.completed"}
    assert all(i["order_id"] == order.public_id for i in body["items"])
    assert client.get("/merchant/callbacks", headers=other).json()["total"] == 0
    assert client.get("/merchant/callbacks?status=bogus", headers=auth).status_code == 422

    delivery_id = body["items"][0]["id"]
    r = client.post(f"/merchant/callbacks/{delivery_id}/resend", headers=other)
    assert r.status_code == 404
    r = client.post(f"/merchant/callbacks/{delivery_id}/resend", headers=auth)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempt_count"]) == ("pending", 0)
    db.expire_all()
    assert db.get(CallbackDelivery, delivery_id).url == "http://127.0.0.1:9/hook"
    [audit] = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "callback.resent", AuditLog.target_id == str(delivery_id)
        )
    ).all()
    assert audit.user_id == mine.merchant.user_id and audit.ip_address is not None
    assert audit.details == {
        "store_id": mine.store.id,
        "old": {"status": body["items"][0]["status"]},
        "new": {"status": "pending"},
    }
