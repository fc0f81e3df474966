"""Merchant order routes over HTTP: the list from intake on (intake statuses, filters, newest
first), one order (store commission shown, trader commission and profit never, numbers masked),
cancel and dispute with evidence, another merchant's order 404, bad input writes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from jivapay.database.models import (
    BalanceStoreHistory,
    IncomingOrder,
    OrderHistory,
    UploadedDocument,
)
from jivapay.enums import OrderType, Role
from jivapay.servers.app_factory import build_app
from jivapay.services.order_processor import process_incoming_order
from tests.api.merchant_support import audit_count, bearer, count
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader
from tests.sample_files import pdf_bytes

D = Decimal


@pytest.fixture
def client(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.servers.merchant.server import ROUTERS

    return TestClient(build_app(Role.MERCHANT, routers=ROUTERS))


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    mine = make_store(db, ref, balance=D("1000"))
    theirs = make_store(db, ref)
    trader = make_trader(db, ref)
    make_requisite(db, trader, ref, number="2200123412345678")
    return (
        ref,
        mine,
        theirs,
        bearer(mine.merchant.user_id, Role.MERCHANT),
        bearer(theirs.merchant.user_id, Role.MERCHANT),
    )


def _assigned(db, world, ref, **kw):  # type: ignore[no-untyped-def]
    incoming = make_incoming(db, world, ref, **kw)
    result = process_incoming_order(incoming.id)
    assert result.order_id is not None
    db.expire_all()
    return incoming, db.get(OrderHistory, result.order_id)


def test_list_shows_intake_and_assigned_orders_masked(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, theirs, auth, other = world
    waiting = make_incoming(db, mine, ref, merchant_order_id="waiting-1")
    incoming, order = _assigned(db, mine, ref, amount_fiat=D("500.00"))
    payout, _ = _assigned(db, mine, ref, order_type=OrderType.PAYOUT)
    make_incoming(db, theirs, ref)

    r = client.get("/merchant/orders", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3
    assert [i["order_id"] for i in body["items"]][-1] == waiting.public_id  # newest first
    by_id = {i["order_id"]: i for i in body["items"]}
    assert by_id[waiting.public_id]["status"] == "new"
    assert by_id[waiting.public_id]["assigned"] is False
    item = by_id[incoming.public_id]
    assert (item["status"], item["amount_fiat"], item["amount_crypto"]) == (
        "pending",
        "500.00",
        "10.00000000",
    )
    assert (item["store_commission"], item["store_commission_rate"]) == ("0.50000000", "5.0000")
    assert "trader_commission" not in item and "platform_profit" not in item
    assert item["requisite"]["number_masked"] == "**** 5678"
    assert by_id[payout.public_id]["beneficiary"]["number_masked"] == "**** 1111"
    assert "2200123412345678" not in r.text and "4111111111111111" not in r.text

    def total(query: str) -> int:
        res = client.get(f"/merchant/orders?{query}", headers=auth)
        assert res.status_code == 200, res.text
        return int(res.json()["total"])

    assert total("status=new") == 1
    assert total("status=pending") == 2
    assert total("status=completed") == 0
    assert total("order_type=payout") == 1
    assert total("merchant_order_id=waiting-1") == 1
    assert total(f"store_id={theirs.store.id}") == 0
    assert total("created_from=2000-01-01T00:00:00Z&created_to=2000-01-02T00:00:00Z") == 0
    for bad in (
        "status=assigned",
        "status=bogus",
        "order_type=x",
        "created_from=yesterday",
        "created_from=2026-02-01T00:00:00Z&created_to=2026-01-01T00:00:00Z",
        "limit=0",
        "limit=201",
    ):
        res = client.get(f"/merchant/orders?{bad}", headers=auth)
        assert res.status_code == 422, bad
        assert res.headers["content-type"].startswith("application/problem+json")

    assert client.get("/merchant/orders", headers=other).json()["total"] == 1
    r = client.get(f"/merchant/orders/{incoming.public_id}", headers=other)
    assert r.status_code == 404
    r = client.get(f"/merchant/orders/{incoming.public_id}", headers=auth)
    assert r.status_code == 200 and r.json()["order_id"] == order.public_id


def test_cancel_at_intake_and_after_assignment(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, auth, other = world
    waiting = make_incoming(db, mine, ref)
    incoming, _ = _assigned(db, mine, ref, order_type=OrderType.PAYOUT)

    before = (count(db, BalanceStoreHistory), audit_count(db))
    r = client.post(f"/merchant/orders/{incoming.public_id}/cancel", headers=other)
    assert r.status_code == 404
    r = client.post(
        f"/merchant/orders/{incoming.public_id}/cancel", headers=auth, json={"bogus": 1}
    )
    assert r.status_code == 422
    assert (count(db, BalanceStoreHistory), audit_count(db)) == before

    r = client.post(f"/merchant/orders/{waiting.public_id}/cancel", headers=auth)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["changed"]) == ("failed", True)
    assert r.json()["failure_reason"] == "canceled by store"
    r = client.post(f"/merchant/orders/{waiting.public_id}/cancel", headers=auth)
    assert (r.json()["status"], r.json()["changed"]) == ("failed", False)

    r = client.post(
        f"/merchant/orders/{incoming.public_id}/cancel",
        headers=auth,
        json={"reason": "customer left"},
    )
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert r.json()["cancellation_reason"] == "customer left"
    db.expire_all()
    release = (
        db.query(BalanceStoreHistory)
        .filter_by(incoming_order_id=incoming.id, operation="release")
        .one()
    )
    assert release.frozen_delta == -incoming.store_hold
    r = client.post(f"/merchant/orders/{incoming.public_id}/cancel", headers=auth)
    assert r.json()["changed"] is False


def test_cancel_completed_is_409(client, db, world) -> None:  # type: ignore[no-untyped-def]
    from jivapay.services import order_status_manager as osm

    ref, mine, _, auth, _ = world
    incoming, order = _assigned(db, mine, ref)
    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=order.public_id,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=order.trader_id),
    )
    db.flush()
    r = client.post(f"/merchant/orders/{incoming.public_id}/cancel", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "invalid_status_transition"


def test_dispute_with_evidence(client, db, world, s3_endpoint) -> None:  # type: ignore[no-untyped-def]
    ref, mine, _, auth, other = world
    incoming, _ = _assigned(db, mine, ref)
    pdf = ("e.pdf", pdf_bytes(), "application/pdf")

    docs = count(db, UploadedDocument)
    too_many = [("evidence", pdf) for _ in range(6)]
    r = client.post(
        f"/merchant/orders/{incoming.public_id}/dispute",
        headers=auth,
        data={"reason": "not paid"},
        files=too_many,
    )
    # The multipart parser refuses a sixth file before the route runs: the document's maxItems, 422.
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    r = client.post(
        f"/merchant/orders/{incoming.public_id}/dispute",
        headers=other,
        data={"reason": "x"},
        files=[("evidence", pdf)],
    )
    assert r.status_code == 404
    assert count(db, UploadedDocument) == docs

    r = client.post(
        f"/merchant/orders/{incoming.public_id}/dispute",
        headers=auth,
        data={"reason": "customer says paid"},
        files=[("evidence", pdf), ("evidence", pdf)],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["changed"], body["dispute_reason"]) == (
        "disputed",
        True,
        "customer says paid",
    )
    assert [d["kind"] for d in body["receipts"]] == ["dispute_evidence", "dispute_evidence"]
    assert all(d["url"] for d in body["receipts"])
    r = client.post(
        f"/merchant/orders/{incoming.public_id}/dispute", headers=auth, json={"reason": "again"}
    )
    assert r.status_code == 200 and r.json()["changed"] is False

    waiting = make_incoming(db, mine, ref)
    r = client.post(f"/merchant/orders/{waiting.public_id}/dispute", headers=auth, json={})
    assert r.status_code == 409
    assert db.get(IncomingOrder, waiting.id).status == "new"
