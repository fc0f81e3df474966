"""Staff operations over HTTP on the admin and support apps: the order search and detail, order
interventions, disputes, the intake queue, money moves, fraud lists, callbacks and merchants, each
audited with actor, IP, reason, old and new values; repeats answer `changed: false`; bad input is
problem+json and writes nothing."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from operator import itemgetter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jivapay.database.models import (
    AuditLog,
    BalanceStore,
    BalanceTrader,
    CallbackDelivery,
    FraudList,
    IncomingOrder,
    OrderHistory,
)
from jivapay.enums import ActorKind, IncomingOrderStatus, OrderEvent, OrderType, Role
from jivapay.services import fraud_lists
from jivapay.services import order_status_manager as osm
from jivapay.services.audit_logger import log_event
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from tests.api.staff_support import make_staff, make_template_staff, row_counts
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader
from tests.sample_files import pdf_bytes

D = Decimal
CARD = "2200123412345678"


@pytest.fixture
def admin_client(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import app

    return TestClient(app)


@pytest.fixture
def support_client(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.servers.support.server import app

    return TestClient(app)


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    store = make_store(db, ref, balance=D("1000"), callback_url="https://merchant.example/cb")
    trader = make_trader(db, ref)
    make_requisite(db, trader, ref, number=CARD)
    admin = make_template_staff(db, "super_admin")
    return ref, store, trader, admin


def _order(db, store, ref, **kw: Any) -> OrderHistory:  # type: ignore[no-untyped-def]
    res = process_incoming_order(make_incoming(db, store, ref, **kw).id)
    order = db.get(OrderHistory, res.order_id)
    assert order is not None
    return order


def _staff_rows(db, action: str) -> list[AuditLog]:  # type: ignore[no-untyped-def]
    return list(db.scalars(select(AuditLog).where(AuditLog.action == action)))


def test_search_shows_staff_fields_and_filters(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, admin = world
    small = _order(db, store, ref, amount_fiat=D("500.00"))
    big = _order(db, store, ref, amount_fiat=D("900.00"), merchant_order_id="shop-77")
    r = admin_client.get("/admin/orders", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 2 and body["total_is_lower_bound"] is False
    item = body["items"][0]
    assert item["order_id"] == big.public_id
    for field in ("store_commission", "trader_commission", "platform_profit", "hold_amount"):
        assert isinstance(item[field], str)
    assert item["intake_status"] == "assigned" and item["requisite_masked"] == "**** 5678"
    assert CARD not in r.text

    def ids(query: str) -> list[str]:
        res = admin_client.get(f"/admin/orders?{query}", headers=admin)
        assert res.status_code == 200, res.text
        return [i["order_id"] for i in res.json()["items"]]

    assert ids("sort=amount") == [small.public_id, big.public_id]
    assert ids("merchant_order_id=shop-77") == [big.public_id]
    assert ids("amount=500.00") == [small.public_id]
    assert ids("amount_min=600&amount_max=1000") == [big.public_id]
    assert ids(f"requisite_last4=5678&trader_id={trader.id}") == [big.public_id, small.public_id]
    assert ids(f"store_id={store.store.id}&status=pending&order_type=payin") != []
    assert ids(f"order_id={small.public_id}") == [small.public_id]
    assert ids("requisite_last4=0000") == []
    for bad in (
        "sort=price",
        "status=nope",
        "amount=1.234",
        "amount_min=9&amount_max=1",
        "bogus=1",
    ):
        res = admin_client.get(f"/admin/orders?{bad}", headers=admin)
        assert res.status_code == 422, bad
        assert res.headers["content-type"].startswith("application/problem+json")

    detail = admin_client.get(f"/admin/orders/{small.public_id}", headers=admin).json()
    assert [e["to_status"] for e in detail["timeline"] if e["action"] == "order.pending"] == [
        "pending"
    ]
    assert detail["callbacks"] and detail["callbacks"][0]["event_type"] == "order.pending"
    assert admin_client.get("/admin/orders/ord_missing", headers=admin).status_code == 404


def test_store_grant_sees_one_store_only(support_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _, _ = world
    other = make_store(db, ref, balance=D("10"))
    mine = _order(db, store, ref, amount_fiat=D("500.00"))
    theirs = _order(db, other, ref, amount_fiat=D("500.00"))
    scoped = make_staff(db, Role.SUPPORT, [f"orders:view:store:{store.store.id}"])
    r = support_client.get("/support/orders", headers=scoped)
    assert r.status_code == 200 and [i["order_id"] for i in r.json()["items"]] == [mine.public_id]
    assert (
        support_client.get(f"/support/orders/{theirs.public_id}", headers=scoped).status_code == 404
    )
    nobody = make_staff(db, Role.SUPPORT, ["orders:view:store:999999"])
    assert support_client.get("/support/orders", headers=nobody).json()["total"] == 0
    assert (
        support_client.get("/support/orders", headers=make_staff(db, Role.SUPPORT, [])).status_code
        == 403
    )


def test_complete_cancel_repeat_and_conflict(support_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _, _ = world
    support = make_template_staff(db, "support_orders")
    done = _order(db, store, ref, amount_fiat=D("500.00"))
    r = support_client.post(
        f"/support/orders/{done.public_id}/complete",
        json={"reason": "bank statement"},
        headers=support,
    )
    assert r.status_code == 200 and r.json() == {
        "order_id": done.public_id,
        "status": "completed",
        "changed": True,
    }
    again = support_client.post(
        f"/support/orders/{done.public_id}/complete", json={"reason": "again"}, headers=support
    )
    assert again.status_code == 200 and again.json()["changed"] is False
    r = support_client.post(
        f"/support/orders/{done.public_id}/cancel", json={"reason": "late"}, headers=support
    )
    assert r.status_code == 409 and r.json()["code"] == "invalid_status_transition"

    canceled = _order(db, store, ref, amount_fiat=D("400.00"))
    r = support_client.post(
        f"/support/orders/{canceled.public_id}/cancel",
        json={"reason": "customer left"},
        headers=support,
    )
    assert r.json()["status"] == "canceled"
    (row,) = [a for a in _staff_rows(db, "staff.order_cancel") if a.target_id == canceled.public_id]
    assert row.ip_address == "testclient" and row.user_id is not None
    assert row.details["reason"] == "customer left"
    assert row.details["old"] == {"status": "pending"} and row.details["new"] == {
        "status": "canceled"
    }
    assert reconcile(db) == []


def test_dispute_with_evidence_and_resolution(admin_client, db, world, s3_endpoint) -> None:  # type: ignore[no-untyped-def]
    ref, store, _, admin = world
    order = _order(db, store, ref, amount_fiat=D("500.00"))
    pdf = pdf_bytes()
    r = admin_client.post(
        f"/admin/orders/{order.public_id}/dispute",
        data={"reason": "payer says paid"},
        files=[("evidence", ("e.pdf", pdf, "application/pdf"))],
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "disputed"
    disputes = admin_client.get("/admin/disputes", headers=admin).json()
    assert disputes["items"][0]["order_id"] == order.public_id
    assert disputes["items"][0]["evidence_count"] == 1
    detail = admin_client.get(f"/admin/orders/{order.public_id}", headers=admin).json()
    assert detail["documents"][0]["url"].startswith(s3_endpoint)

    url = f"/admin/disputes/{order.public_id}/resolve"
    r = admin_client.post(url, json={"outcome": "completed", "reason": "receipt ok"}, headers=admin)
    assert r.json() == {"order_id": order.public_id, "status": "completed", "changed": True}
    r = admin_client.post(url, json={"outcome": "completed", "reason": "again"}, headers=admin)
    assert r.json()["changed"] is False
    r = admin_client.post(url, json={"outcome": "canceled", "reason": "flip"}, headers=admin)
    assert r.status_code == 409
    resolved = admin_client.get("/admin/disputes?state=resolved", headers=admin).json()
    assert resolved["total"] == 1
    assert reconcile(db) == []


def _held(db, store, ref, order_type: OrderType = OrderType.PAYOUT) -> IncomingOrder:  # type: ignore[no-untyped-def]
    incoming = make_incoming(db, store, ref, amount_fiat=D("500.00"), order_type=order_type)
    incoming.status = IncomingOrderStatus.MANUAL_REVIEW.value
    incoming.next_attempt_at = None
    log_event(
        db,
        action="fraud.review",
        target_entity="order",
        target_id=incoming.public_id,
        details={"rule": "amount_review_threshold"},
    )
    db.flush()
    return incoming


def test_intake_queue_release_and_reject(support_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _, _ = world
    support = make_template_staff(db, "support_orders")
    released, rejected = _held(db, store, ref), _held(db, store, ref)
    r = support_client.get("/support/incoming-orders?status=manual_review", headers=support)
    assert r.status_code == 200 and r.json()["total"] == 2
    assert {i["fraud_rule"] for i in r.json()["items"]} == {"amount_review_threshold"}

    url = f"/support/incoming-orders/{released.public_id}/release"
    r = support_client.post(url, headers=support)
    assert r.status_code == 200 and r.json() == {
        "order_id": released.public_id,
        "status": "new",
        "changed": True,
    }
    assert support_client.post(url, headers=support).json()["changed"] is False

    url = f"/support/incoming-orders/{rejected.public_id}/reject"
    r = support_client.post(url, json={"reason": "stolen card"}, headers=support)
    assert r.json()["status"] == "failed" and r.json()["changed"] is True
    assert (
        support_client.post(url, json={"reason": "x"}, headers=support).json()["changed"] is False
    )
    r = support_client.post(
        f"/support/incoming-orders/{rejected.public_id}/release", headers=support
    )
    assert r.status_code == 409
    balance = db.scalar(select(BalanceStore).where(BalanceStore.store_id == store.store.id))
    db.refresh(balance)
    assert balance.frozen == released.store_hold  # the rejected PayOut's hold was released
    assert reconcile(db) == []


def test_money_moves_and_platform(admin_client, support_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, admin = world
    code = ref.crypto.code
    url = f"/admin/balances/traders/{trader.id}/deposit"
    r = admin_client.post(
        url,
        json={"crypto_currency": code, "amount": "250.5", "reason": "top-up"},
        headers={**admin, "Idempotency-Key": "move-1"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == "10250.50000000" and r.json()["amount"] == "250.5"
    r = admin_client.post(
        f"/admin/balances/stores/{store.store.id}/withdraw",
        json={"crypto_currency": code, "amount": "5000", "reason": "payout"},
        headers={**admin, "Idempotency-Key": "move-2"},
    )
    assert r.status_code == 422 and r.json()["code"] == "insufficient_balance"
    r = admin_client.post(
        "/admin/balances/adjust",
        json={"account": "platform", "crypto_currency": code, "amount": "-1.25", "reason": "fee"},
        headers={**admin, "Idempotency-Key": "move-3"},
    )
    assert r.status_code == 422 and r.json()["code"] == "insufficient_balance"
    # Amounts in plain notation, as everywhere else (a zero NUMERIC once read "0E-8" here).
    assert "does not cover 1.25" in r.json()["detail"] and "E-" not in r.json()["detail"]
    assert "E-" not in r.json()["available"], r.json()
    r = admin_client.post(
        "/admin/balances/adjust",
        json={"account": "platform", "crypto_currency": code, "amount": "2", "reason": "fee"},
        headers={**admin, "Idempotency-Key": "move-4"},
    )
    assert r.status_code == 200 and r.json()["balance"] == "2.00000000"
    r = admin_client.post(
        "/admin/balances/adjust",
        json={
            "account": "store",
            "account_id": store.store.id,
            "crypto_currency": code,
            "amount": "-1.25",
            "reason": "correction",
        },
        headers={**admin, "Idempotency-Key": "move-5"},
    )
    assert r.status_code == 200 and r.json()["balance"] == "998.75000000"
    hist = admin_client.get(f"/admin/balances/trader/{trader.id}/history", headers=admin).json()
    assert hist["items"][0]["operation"] == "deposit" and hist["items"][0]["reason"] == "top-up"
    plat = admin_client.get("/admin/platform/balance", headers=admin).json()
    assert plat[0]["adjustments_total"] == "2.00000000"
    traders = admin_client.get(f"/admin/balances/traders?trader_id={trader.id}", headers=admin)
    assert traders.json()["items"][0]["available"] == "10250.50000000"
    (row,) = _staff_rows(db, "staff.balance_deposit")
    assert row.details["old"]["balance"] == "10000.00000000"
    assert row.details["new"]["balance"] == "10250.50000000" and row.ip_address

    support = make_template_staff(db, "support_orders")
    r = support_client.post(
        f"/support/balances/traders/{trader.id}/deposit",
        json={"crypto_currency": code, "amount": "1", "reason": "x"},
        headers={**support, "Idempotency-Key": "move-9"},
    )
    assert r.status_code == 403
    assert reconcile(db) == []


def _document(*, crypto_currency: str, amount: str, reason: str, **numbers: str) -> str:
    """A JSON body with `amount` and `numbers` written as given (a JSON number unless quoted)."""
    fields = {"crypto_currency": json.dumps(crypto_currency), "amount": amount, **numbers}
    fields["reason"] = json.dumps(reason)
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


def _raw_post(
    client: TestClient, url: str, document: str, headers: dict[str, str], key: str
) -> Any:
    """POST `document` as written: JSON numbers reach the server as their text, not a float."""
    return client.post(
        url,
        content=document,
        headers={**headers, "Idempotency-Key": key, "Content-Type": "application/json"},
    )


def test_staff_deposit_accepts_a_json_number_amount(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    """A JSON number with a fraction is a valid amount, read exactly, on the staff servers as on the
    gateway (`api_routers.routing.LosslessJSONRoute`)."""
    ref, _, trader, admin = world
    r = _raw_post(
        admin_client,
        f"/admin/balances/traders/{trader.id}/deposit",
        _document(crypto_currency=ref.crypto.code, amount="12.34567891", reason="top-up"),
        admin,
        "num-1",
    )
    assert r.status_code == 200, r.text
    assert r.json()["amount"] == "12.34567891"
    assert r.json()["balance"] == "10012.34567891"


def test_json_number_money_moves_are_exact_and_keyed_by_their_value(  # type: ignore[no-untyped-def]
    admin_client, db, world
) -> None:
    ref, store, trader, admin = world
    code = ref.crypto.code
    url = f"/admin/balances/traders/{trader.id}/deposit"

    def deposit(amount: str, key: str) -> Any:
        document = _document(crypto_currency=code, amount=amount, reason="top-up")
        return _raw_post(admin_client, url, document, admin, key)

    first = deposit("0.30000001", "n-1")
    assert first.status_code == 200, first.text
    assert first.json()["balance"] == "10000.30000001"
    # The idempotency fingerprint hashes the parsed body: the same amount written as a string is
    # the same request (replayed), another amount with the key is refused.
    again = deposit('"0.30000001"', "n-1")
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    other = deposit("0.30000002", "n-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"

    # More places than a crypto amount takes is refused, never rounded: through a float
    # 12.000000000000000001 would have become 12.0 and been accepted.
    before = row_counts(db)
    for i, number in enumerate(("1.123456789", "12.000000000000000001")):
        r = deposit(number, f"places-{i}")
        assert r.status_code == 422, (number, r.text)
        assert any("decimal places" in e["msg"] for e in r.json()["errors"]), r.text
    assert row_counts(db) == before

    # A signed adjustment as a JSON number; the store's id written as 1.0-style number is still
    # an integer (lax int from an exact Decimal).
    document = _document(
        account='"store"',
        account_id=f"{store.store.id}.0",
        crypto_currency=code,
        amount="-1.25",
        reason="correction",
    )
    r = _raw_post(admin_client, "/admin/balances/adjust", document, admin, "n-adjust")
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == "998.75000000" and r.json()["amount"] == "-1.25"
    # An integer field given a number Pydantic would take minutes to expand (`int(Decimal(...))`)
    # refuses it at once: such a number stays text (`api_routers.routing.MAX_NUMBER_CHARS`).
    for number in ("1e-99999999", "1" + "0" * 200 + ".5"):
        started = time.monotonic()
        document = _document(
            account='"store"', account_id=number, crypto_currency=code, amount="1", reason="x"
        )
        r = _raw_post(admin_client, "/admin/balances/adjust", document, admin, f"huge-{number[:5]}")
        assert r.status_code == 422 and time.monotonic() - started < 5, r.text
    assert reconcile(db) == []


def test_fraud_list_card_is_stored_as_hash(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    *_, admin = world
    card = "4111111111111111"
    r = admin_client.post(
        "/admin/fraud-lists",
        json={"kind": "card_hash", "value": card, "list_type": "block", "reason": "chargeback"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["value"] == fraud_lists.card_hash_of(card) and card not in r.text
    assert card not in str(db.scalars(select(AuditLog.details)).all())
    dup = admin_client.post(
        "/admin/fraud-lists",
        json={"kind": "card_hash", "value": card, "list_type": "block", "reason": "again"},
        headers=admin,
    )
    assert dup.status_code == 409
    listed = admin_client.get(f"/admin/fraud-lists?kind=card_hash&value={card}", headers=admin)
    assert listed.json()["total"] == 1
    entry_id = r.json()["id"]
    assert admin_client.delete(f"/admin/fraud-lists/{entry_id}", headers=admin).status_code == 200
    assert admin_client.delete(f"/admin/fraud-lists/{entry_id}", headers=admin).status_code == 404
    assert db.scalar(select(FraudList).where(FraudList.id == entry_id)) is None


def test_callbacks_and_merchants(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _, admin = world
    order = _order(db, store, ref, amount_fiat=D("500.00"))
    r = admin_client.get(f"/admin/callbacks?store_id={store.store.id}", headers=admin)
    assert r.status_code == 200 and r.json()["items"][0]["order_id"] == order.public_id
    delivery_id = r.json()["items"][0]["id"]
    r = admin_client.post(f"/admin/callbacks/{delivery_id}/resend", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert db.get(CallbackDelivery, delivery_id).attempt_count == 0
    assert admin_client.post("/admin/callbacks/99999999/resend", headers=admin).status_code == 404

    mine = _merchant_row(admin_client, admin, store.merchant.id)
    assert mine["stores"] == 1 and mine["orders_total"] == 1
    assert mine["orders_completed"] == 0 and mine["completed"] == []
    r = admin_client.get(f"/admin/merchants/{store.merchant.id}", headers=admin)
    assert r.status_code == 200
    detail = r.json()
    assert store.private_key not in r.text and store.store.callback_secret not in r.text
    assert detail["stores"][0]["commission"]["commission_payin"] == "5.0000"
    assert detail["recent_orders"][0]["order_id"] == order.public_id
    assert isinstance(detail["stores"][0]["balances"], list)
    # Balances are behind their own grant, here as on their own routes.
    narrow = make_staff(db, Role.ADMIN, ["merchants:view:all"])
    r = admin_client.get(f"/admin/merchants/{store.merchant.id}", headers=narrow)
    assert r.status_code == 200 and r.json()["stores"][0]["balances"] is None
    assert admin_client.get("/admin/merchants/99999999", headers=admin).status_code == 404


def _merchant_row(client: TestClient, headers: dict[str, str], merchant_id: int) -> dict[str, Any]:
    """The merchant's row of `GET /admin/merchants/stats`, paging until it is found."""
    offset, total = 0, 1
    while offset < total:
        r = client.get(f"/admin/merchants/stats?limit=200&offset={offset}", headers=headers)
        assert r.status_code == 200, r.text
        rows = [m for m in r.json()["items"] if m["merchant_id"] == merchant_id]
        if rows:
            return rows[0]
        offset, total = offset + 200, r.json()["total"]
    raise AssertionError("merchant missing from /admin/merchants/stats")


def _completed(db, store, ref, trader, *, amount: Decimal, kind: OrderType) -> OrderHistory:  # type: ignore[no-untyped-def]
    """An order taken in, assigned to `trader` and confirmed by it."""
    order = _order(db, store, ref, amount_fiat=amount, order_type=kind)
    assert order.trader_id == trader.id
    actor = osm.Actor(ActorKind.TRADER, user_id=trader.user_id, trader_id=trader.id)
    osm.transition(db, public_id=order.public_id, event=OrderEvent.CONFIRM, actor=actor)
    db.flush()
    return order


def test_merchant_stats_report_completed_money_per_currency_and_direction(admin_client, db) -> None:  # type: ignore[no-untyped-def]
    """A merchant with stores in two fiat (and crypto) currencies and both directions gets one
    completed figure per order type and currency pair: amounts of different currencies, and money
    paid in (PayIn) and paid out (PayOut), are never summed into one number (domain section 2)."""
    ref_a = make_reference(db, rate=D("100"))
    ref_b = make_reference(db, rate=D("500"))
    store_a = make_store(db, ref_a, balance=D("1000"))
    store_b = make_store(db, ref_b, balance=D("1000"))
    # One merchant owning both stores (set before any order: orders copy the store's merchant).
    store_b.store.merchant_id = store_a.merchant.id
    db.flush()
    trader_a = make_trader(db, ref_a, deposit=D("100000"))
    make_requisite(db, trader_a, ref_a)
    trader_b = make_trader(db, ref_b, deposit=D("100000"))
    make_requisite(db, trader_b, ref_b)
    payin_a = _completed(db, store_a, ref_a, trader_a, amount=D("1000.00"), kind=OrderType.PAYIN)
    payout_a = _completed(db, store_a, ref_a, trader_a, amount=D("400.00"), kind=OrderType.PAYOUT)
    payin_b = _completed(db, store_b, ref_b, trader_b, amount=D("50000.00"), kind=OrderType.PAYIN)
    _order(db, store_a, ref_a, amount_fiat=D("300.00"))  # pending: counted, not turnover

    admin = make_template_staff(db, "super_admin")
    row = _merchant_row(admin_client, admin, store_a.merchant.id)
    assert (row["stores"], row["orders_total"], row["orders_completed"]) == (2, 4, 3)

    def entry(order: OrderHistory, ref: Any) -> dict[str, Any]:
        return {
            "order_type": order.order_type,
            "fiat_currency": ref.fiat.code,
            "crypto_currency": ref.crypto.code,
            "count": 1,
            "amount_fiat": str(order.amount_fiat),
            "amount_crypto": str(order.amount_crypto),
            "store_commission": str(order.store_commission),
        }

    expected = [entry(payin_a, ref_a), entry(payin_b, ref_b), entry(payout_a, ref_a)]
    key = itemgetter("order_type", "fiat_currency", "crypto_currency")
    assert sorted(row["completed"], key=key) == sorted(expected, key=key)
    assert "turnover_fiat_completed" not in row and "store_commission_completed" not in row


def _bad_writes(world, order: OrderHistory, held: IncomingOrder) -> list[tuple[str, str, Any]]:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    code = ref.crypto.code
    o, s, t = order.public_id, store.store.id, trader.id
    move = {"crypto_currency": code, "amount": "1", "reason": "r"}
    return [
        ("post", f"/admin/orders/{o}/complete", {}),
        ("post", f"/admin/orders/{o}/complete", {"reason": ""}),
        ("post", f"/admin/orders/{o}/cancel", {"reason": "x", "extra": 1}),
        ("post", f"/admin/orders/{o}/dispute", {"reason": "x", "files": []}),
        ("post", f"/admin/disputes/{o}/resolve", {"outcome": "refunded", "reason": "x"}),
        ("post", f"/admin/disputes/{o}/resolve", {"outcome": "completed", "reason": "x"}),
        ("post", f"/admin/incoming-orders/{held.public_id}/reject", {"reason": ""}),
        ("post", f"/admin/incoming-orders/{o}/release", None),
        ("post", f"/admin/balances/traders/{t}/deposit", {**move, "amount": "-1"}),
        ("post", f"/admin/balances/traders/{t}/deposit", {**move, "amount": 1.123456789}),
        ("post", f"/admin/balances/traders/{t}/deposit", {**move, "amount": "0.000000001"}),
        ("post", f"/admin/balances/traders/{t}/withdraw", {**move, "amount": "999999"}),
        ("post", f"/admin/balances/stores/{s}/deposit", {**move, "crypto_currency": "NOPE"}),
        ("post", f"/admin/balances/stores/{s}/withdraw", {**move, "reason": ""}),
        ("post", "/admin/balances/stores/99999999/deposit", move),
        ("post", "/admin/balances/adjust", {**move, "account": "store", "amount": "0"}),
        ("post", "/admin/balances/adjust", {**move, "account": "store"}),
        ("post", "/admin/balances/adjust", {**move, "account": "platform", "account_id": s}),
        ("post", "/admin/balances/adjust", {**move, "account": "bank", "account_id": s}),
        (
            "post",
            "/admin/fraud-lists",
            {"kind": "ip", "value": "1.2.3", "list_type": "block", "reason": "r"},
        ),
        (
            "post",
            "/admin/fraud-lists",
            {"kind": "card_last4", "value": "12a4", "list_type": "block", "reason": "r"},
        ),
        (
            "post",
            "/admin/fraud-lists",
            {"kind": "ip", "value": "1.2.3.4", "list_type": "grey", "reason": "r"},
        ),
        ("delete", "/admin/fraud-lists/99999999", None),
        ("post", "/admin/callbacks/99999999/resend", None),
    ]


def test_bad_input_on_every_write_is_problem_json_and_writes_nothing(
    admin_client, db, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _, admin = world
    order = _order(db, store, ref, amount_fiat=D("500.00"))
    held = _held(db, store, ref)
    balances = {
        "trader": [b.balance for b in db.scalars(select(BalanceTrader))],
        "store": [b.balance for b in db.scalars(select(BalanceStore))],
    }
    before = row_counts(db)
    for i, (method, path, body) in enumerate(_bad_writes(world, order, held)):
        kwargs: dict[str, Any] = {"headers": {**admin, "Idempotency-Key": f"bad-{i}"}}
        if body is not None:
            kwargs["json"] = body
        r = admin_client.request(method.upper(), path, **kwargs)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), path
        assert row_counts(db) == before, (path, body)
    db.expire_all()
    assert [b.balance for b in db.scalars(select(BalanceTrader))] == balances["trader"]
    assert [b.balance for b in db.scalars(select(BalanceStore))] == balances["store"]
