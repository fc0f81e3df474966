"""Every audit row a request writes records the request's client address, through the real apps:
the gateway (intake, the store's cancel and dispute, the payer's confirm and its fraud check), the
merchant's and the trader's order actions, the staff interventions whose inner rows (the state
machine's, the balance's, the fraud list's, the review's, the trader priority's) are written by
other services, and the admin's reference and rate edits. The address is the ASGI client, which
uvicorn takes from `X-Forwarded-For` only for a trusted proxy (`servers/serving.py`)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from jivapay.database.models import AuditLog, IncomingOrder, OrderHistory
from jivapay.enums import IncomingOrderStatus, OrderType, Role
from jivapay.security import create_access_token
from jivapay.servers.serving import proxy_options
from jivapay.services import fraud_lists
from jivapay.services.audit_logger import log_event
from jivapay.services.order_processor import process_incoming_order
from tests.api.merchant_support import bearer
from tests.api.staff_support import make_template_staff
from tests.factories import (
    Ref,
    StoreWorld,
    gateway_headers,
    make_bank_method,
    make_incoming,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
)
from tests.sample_files import pdf_bytes

D = Decimal
IP = "203.0.113.77"
CLIENT = (IP, 43210)
PDF = pdf_bytes()


def _ips(db: Session, target_id: object, *actions: str) -> dict[str, set[str | None]]:
    """action -> the addresses its audit rows about `target_id` carry (every action must exist)."""
    db.expire_all()
    rows = db.scalars(
        select(AuditLog).where(AuditLog.target_id == str(target_id), AuditLog.action.in_(actions))
    ).all()
    found: dict[str, set[str | None]] = {}
    for row in rows:
        found.setdefault(row.action, set()).add(row.ip_address)
    assert set(found) == set(actions), (found, actions)
    return found


def _all_from(db: Session, target_id: object, *actions: str, ip: str = IP) -> None:
    assert _ips(db, target_id, *actions) == {a: {ip} for a in actions}


@pytest.fixture
def world(db: Session) -> tuple[Ref, StoreWorld, Any]:
    ref = make_reference(db, rate=D("100"))
    make_bank_method(db, ref)
    store = make_store(db, ref, lower=D("100"), upper=D("50000"), balance=D("1000"))
    trader = make_trader(db, ref, deposit=D("10000"))
    make_requisite(db, trader, ref, number="2200123456789012")
    db.commit()
    return ref, store, trader


def _assigned(db: Session, store: StoreWorld, ref: Ref, **kw: Any) -> OrderHistory:
    result = process_incoming_order(make_incoming(db, store, ref, **kw).id)
    assert result.order_id is not None
    order = db.get(OrderHistory, result.order_id)
    assert order is not None
    return order


# --------------------------------------------------------------------------- gateway


@pytest.fixture
def gateway(db: Session) -> TestClient:
    from jivapay.servers.gateway.server import app

    return TestClient(app, client=CLIENT)


def _signed(client: TestClient, store: StoreWorld, path: str, body: Any = None, **kw: Any) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    return client.post(path, content=raw, headers=gateway_headers(store, "POST", path, raw, **kw))


def _intake(client: TestClient, store: StoreWorld, ref: Ref, kind: str) -> str:
    body: dict[str, Any] = {
        "merchant_order_id": f"m-{uuid.uuid4().hex[:10]}",
        "amount_fiat": "1000.00",
        "fiat_currency": ref.fiat.code,
    }
    if kind == "payout":
        body |= {
            "payment_method": ref.method.code,
            "bank": ref.bank.code,
            "beneficiary": {"number": "4111-1111-1111-4242", "name": "Ivan Payee"},
        }
    r = _signed(client, store, f"/gateway/{kind}/init", body, idempotency_key=uuid.uuid4().hex)
    assert r.status_code == 201, r.text
    order_id: str = r.json()["order_id"]
    return order_id


def _process(db: Session, public_id: str) -> None:
    incoming_id = db.scalars(
        select(IncomingOrder.id).where(IncomingOrder.public_id == public_id)
    ).one()
    assert process_incoming_order(incoming_id).outcome == "assigned"


@pytest.mark.usefixtures("s3_endpoint")
def test_gateway_intake_payer_confirm_and_store_dispute(db: Session, gateway, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    order_id = _intake(gateway, store, ref, "payin")
    _all_from(db, order_id, "order.intake")
    _process(db, order_id)
    # The worker's assignment is no request's: no address.
    assert _ips(db, order_id, "order.pending") == {"order.pending": {None}}

    r = gateway.post(f"/gateway/payin/confirm/{order_id}")
    assert r.status_code == 200 and r.json()["status"] == "paid", r.text
    _all_from(db, order_id, "order.paid")

    path = f"/gateway/orders/{order_id}/dispute"
    # Encoded once, so the store signs exactly the bytes it sends.
    encoded = httpx.Request(
        "POST",
        "http://x/",
        data={"reason": "not received"},
        files=[("evidence", ("statement.pdf", PDF, "application/pdf"))],
    )
    body = encoded.read()
    headers = gateway_headers(store, "POST", path, body)
    r = gateway.post(
        path, content=body, headers=headers | {"Content-Type": encoded.headers["content-type"]}
    )
    assert r.status_code == 200 and r.json()["status"] == "disputed", r.text
    _all_from(db, order_id, "order.disputed", "document.uploaded")


def test_gateway_store_cancel_assigned_and_at_intake(db: Session, gateway, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    assigned = _intake(gateway, store, ref, "payin")
    _process(db, assigned)
    r = _signed(gateway, store, f"/gateway/orders/{assigned}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    _all_from(db, assigned, "order.canceled")

    waiting = _intake(gateway, store, ref, "payout")
    r = _signed(gateway, store, f"/gateway/orders/{waiting}/cancel", {"reason": "customer left"})
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    _all_from(db, waiting, "order.intake", "order.failed")


def test_gateway_payer_confirm_stopped_by_a_fraud_rule(db: Session, gateway, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    order = _assigned(db, store, ref)
    db.execute(
        update(OrderHistory)
        .where(OrderHistory.id == order.id)
        .values(customer_ip="192.0.2.77", customer_id=None)
    )
    fraud_lists.add_entry(
        db, kind="ip", value="192.0.2.77", list_type="block", reason=None, actor_user_id=None
    )
    db.commit()
    r = gateway.post(f"/gateway/payin/confirm/{order.public_id}")
    assert r.status_code == 200 and r.json()["status"] == "disputed", r.text
    _all_from(db, order.public_id, "fraud.deny", "order.disputed")


# --------------------------------------------------------------------------- merchant


@pytest.fixture
def merchant(db: Session) -> TestClient:
    from jivapay.servers.merchant.server import app

    return TestClient(app, client=CLIENT)


@pytest.mark.usefixtures("s3_endpoint")
def test_merchant_cancel_and_dispute(db: Session, merchant, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    auth = bearer(store.merchant.user_id, Role.MERCHANT)

    canceled = _assigned(db, store, ref)
    r = merchant.post(f"/merchant/orders/{canceled.public_id}/cancel", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    _all_from(db, canceled.public_id, "order.canceled")

    waiting = make_incoming(db, store, ref, order_type=OrderType.PAYOUT)
    db.commit()
    r = merchant.post(
        f"/merchant/orders/{waiting.public_id}/cancel", json={"reason": "gone"}, headers=auth
    )
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    _all_from(db, waiting.public_id, "order.failed")

    disputed = _assigned(db, store, ref)
    r = merchant.post(
        f"/merchant/orders/{disputed.public_id}/dispute",
        data={"reason": "chargeback"},
        files=[("evidence", ("e.pdf", PDF, "application/pdf"))],
        headers=auth,
    )
    assert r.status_code == 200 and r.json()["status"] == "disputed", r.text
    _all_from(db, disputed.public_id, "order.disputed", "document.uploaded")


# --------------------------------------------------------------------------- trader


@pytest.fixture
def trader_app(db: Session) -> TestClient:
    from jivapay.servers.trader.server import app

    return TestClient(app, client=CLIENT)


@pytest.mark.usefixtures("s3_endpoint")
def test_trader_confirm_cancel_and_dispute(db: Session, trader_app, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    auth = {"Authorization": f"Bearer {create_access_token(trader.user_id, Role.TRADER)}"}

    payout = _assigned(db, store, ref, order_type=OrderType.PAYOUT)
    r = trader_app.post(
        f"/trader/orders/{payout.public_id}/confirm",
        files={"receipt": ("r.pdf", PDF, "application/pdf")},
        headers=auth,
    )
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    _all_from(db, payout.public_id, "order.completed", "document.uploaded")

    canceled = _assigned(db, store, ref)
    r = trader_app.post(
        f"/trader/orders/{canceled.public_id}/cancel", json={"reason": "no"}, headers=auth
    )
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    _all_from(db, canceled.public_id, "order.canceled")

    disputed = _assigned(db, store, ref)
    r = trader_app.post(
        f"/trader/orders/{disputed.public_id}/dispute", json={"reason": "odd"}, headers=auth
    )
    assert r.status_code == 200 and r.json()["status"] == "disputed", r.text
    _all_from(db, disputed.public_id, "order.disputed")


# --------------------------------------------------------------------------- staff


@pytest.fixture
def admin_app(db: Session) -> TestClient:
    from jivapay.servers.admin.server import app

    return TestClient(app, client=CLIENT)


@pytest.fixture
def support_app(db: Session) -> TestClient:
    from jivapay.servers.support.server import app

    return TestClient(app, client=CLIENT)


def test_staff_order_actions(db: Session, admin_app, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    admin = make_template_staff(db, "super_admin")
    completed, canceled, disputed = (_assigned(db, store, ref) for _ in range(3))
    for order, action, body in (
        (completed, "complete", {"reason": "paid late"}),
        (canceled, "cancel", {"reason": "duplicate"}),
        (disputed, "dispute", {"reason": "payer says so"}),
    ):
        r = admin_app.post(f"/admin/orders/{order.public_id}/{action}", json=body, headers=admin)
        assert r.status_code == 200, r.text
    _all_from(db, completed.public_id, "order.completed", "staff.order_complete")
    _all_from(db, canceled.public_id, "order.canceled", "staff.order_cancel")
    _all_from(db, disputed.public_id, "order.disputed", "staff.dispute_open")

    r = admin_app.post(
        f"/admin/disputes/{disputed.public_id}/resolve",
        json={"outcome": "canceled", "reason": "refund"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    _all_from(db, disputed.public_id, "order.canceled", "staff.dispute_resolve")


def _held(db: Session, store: StoreWorld, ref: Ref) -> IncomingOrder:
    incoming = make_incoming(db, store, ref, amount_fiat=D("500.00"), order_type=OrderType.PAYOUT)
    incoming.status = IncomingOrderStatus.MANUAL_REVIEW.value
    incoming.next_attempt_at = None
    log_event(db, action="fraud.review", target_entity="order", target_id=incoming.public_id)
    db.flush()
    return incoming


def test_staff_intake_release_and_reject(db: Session, support_app, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    support = make_template_staff(db, "support_orders")
    released, rejected = _held(db, store, ref), _held(db, store, ref)
    r = support_app.post(f"/support/incoming-orders/{released.public_id}/release", headers=support)
    assert r.status_code == 200, r.text
    _all_from(db, released.public_id, "fraud.review_released", "staff.intake_release")
    r = support_app.post(
        f"/support/incoming-orders/{rejected.public_id}/reject",
        json={"reason": "stolen card"},
        headers=support,
    )
    assert r.status_code == 200, r.text
    _all_from(
        db, rejected.public_id, "fraud.review_rejected", "order.failed", "staff.intake_reject"
    )


def test_staff_money_moves_fraud_lists_and_trader_priority(db: Session, admin_app, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    admin = make_template_staff(db, "super_admin")
    move = {"crypto_currency": ref.crypto.code, "amount": "5", "reason": "top-up"}
    r = admin_app.post(
        f"/admin/balances/traders/{trader.id}/deposit",
        json=move,
        headers={**admin, "Idempotency-Key": "ip-move-1"},
    )
    assert r.status_code == 200, r.text
    r = admin_app.post(
        "/admin/balances/adjust",
        json={**move, "account": "store", "account_id": store.store.id},
        headers={**admin, "Idempotency-Key": "ip-move-2"},
    )
    assert r.status_code == 200, r.text
    rows = db.scalars(
        select(AuditLog).where(
            AuditLog.action.in_(("balance.deposit", "balance.adjustment")),
            AuditLog.details["reason"].astext == "top-up",  # not the factories' deposits
        )
    ).all()
    assert {(row.action, row.ip_address) for row in rows} == {
        ("balance.deposit", IP),
        ("balance.adjustment", IP),
    }

    r = admin_app.post(
        "/admin/fraud-lists",
        json={"kind": "ip", "value": "198.51.100.9", "list_type": "block", "reason": "abuse"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    entry_id = r.json()["id"]
    assert admin_app.delete(f"/admin/fraud-lists/{entry_id}", headers=admin).status_code == 200
    _all_from(db, entry_id, "fraud_list.add", "fraud_list.remove")

    r = admin_app.patch(
        f"/admin/traders/{trader.id}", json={"trafic_priority": 3, "reason": "x"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["changed"] is True, r.text
    _all_from(db, trader.id, "trader.priority_changed", "trader.settings_changed")


# --------------------------------------------------------------------------- admin reference


def test_admin_reference_edits_and_manual_rate(db: Session, admin_app, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, _ = world
    admin = make_template_staff(db, "super_admin")
    r = admin_app.patch(
        f"/admin/reference/banks/{ref.bank.id}", json={"name": "Renamed"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["changed"] is True, r.text
    _all_from(db, ref.bank.id, "bank.update")

    other = make_reference(db)
    r = admin_app.post(
        "/admin/reference/bank-methods",
        json={
            "fiat_currency_id": other.fiat.id,
            "bank_id": other.bank.id,
            "payment_method_id": other.method.id,
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    _all_from(db, r.json()["item"]["id"], "bank_method.availability")

    r = admin_app.put(
        f"/admin/exchange-rates/{ref.crypto.code}/{ref.fiat.code}",
        json={"buy_rate": "95.5", "sell_rate": "96.5"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    _all_from(db, f"{ref.crypto.code}/{ref.fiat.code}", "exchange_rate.set")


# --------------------------------------------------------------------------- behind a proxy


def test_forwarded_address_is_recorded_only_from_a_trusted_proxy(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    """As `jivapay serve` runs it: uvicorn's proxy middleware with the TRUSTED_PROXIES list."""
    from jivapay.servers.merchant.server import app

    ref, store, _ = world
    auth = bearer(store.merchant.user_id, Role.MERCHANT)
    trusted = proxy_options("10.0.0.5")["forwarded_allow_ips"]
    proxied = ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # type: ignore[arg-type]
    forwarded = {**auth, "X-Forwarded-For": "198.51.100.23"}

    via_proxy = _assigned(db, store, ref)
    r = TestClient(proxied, client=("10.0.0.5", 1)).post(  # type: ignore[arg-type]
        f"/merchant/orders/{via_proxy.public_id}/cancel", headers=forwarded
    )
    assert r.status_code == 200, r.text
    _all_from(db, via_proxy.public_id, "order.canceled", ip="198.51.100.23")

    spoofed = _assigned(db, store, ref)
    r = TestClient(proxied, client=("192.0.2.50", 1)).post(  # type: ignore[arg-type]
        f"/merchant/orders/{spoofed.public_id}/cancel", headers=forwarded
    )
    assert r.status_code == 200, r.text
    _all_from(db, spoofed.public_id, "order.canceled", ip="192.0.2.50")
