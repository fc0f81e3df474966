"""Gateway status, payer confirm, store cancel and dispute, and reference methods over HTTP."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway.payer_page import payer_router
from jivapay.api_routers.gateway.router import router
from jivapay.database.models import BalanceStore, BalanceStoreHistory, IncomingOrder
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.services.order_processor import process_incoming_order
from tests.factories import (
    Ref,
    StoreWorld,
    gateway_headers,
    make_bank_method,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
)

D = Decimal
CARD = "2200123456789012"


@pytest.fixture
def client(db: Session) -> TestClient:
    return TestClient(build_app(ServerName.GATEWAY, routers=[router, payer_router]))


@pytest.fixture
def world(db: Session) -> tuple[Ref, StoreWorld, StoreWorld]:
    ref = make_reference(db, rate=D("100"))
    make_bank_method(db, ref)
    store = make_store(db, ref, lower=D("100"), upper=D("50000"), balance=D("1000"))
    other = make_store(db, ref, balance=D("1000"))
    trader = make_trader(db, ref, deposit=D("10000"))
    make_requisite(db, trader, ref, number=CARD)
    db.commit()
    return ref, store, other


def _call(
    client: TestClient, store: StoreWorld, method: str, path: str, body: Any = None, **kw: Any
) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = gateway_headers(store, method, path, raw, **kw)
    return client.request(method, path, content=raw, headers=headers)


def _create(client: TestClient, store: StoreWorld, ref: Ref, kind: str = "payin") -> str:
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
    response = _call(
        client, store, "POST", f"/gateway/{kind}/init", body, idempotency_key=uuid.uuid4().hex
    )
    assert response.status_code == 201, response.text
    order_id: str = response.json()["order_id"]
    return order_id


def _process(db: Session, order_id: str) -> None:
    incoming_id = db.scalars(
        select(IncomingOrder.id).where(IncomingOrder.public_id == order_id)
    ).one()
    assert process_incoming_order(incoming_id).outcome == "assigned"


def test_payin_status_new_then_pending_with_full_requisite_then_paid(
    db: Session, client, world
) -> None:
    ref, store, _ = world
    order_id = _create(client, store, ref)
    status_path = f"/gateway/payin/status/{order_id}"

    before = _call(client, store, "GET", status_path)
    assert before.status_code == 200
    assert before.json()["status"] == "new" and before.json()["requisite"] is None

    _process(db, order_id)
    pending = _call(client, store, "GET", status_path).json()
    assert pending["status"] == "pending" and pending["expires_at"] is not None
    assert pending["requisite"] == {
        "bank": {"code": ref.bank.code, "name": ref.bank.name},
        "payment_method": {"code": ref.method.code, "name": ref.method.name},
        "number": CARD,
        "holder_name": "Ivanova Anna",
    }
    assert pending["amount_crypto"] == "10.00000000" and pending["exchange_rate"] == "100.00000000"

    confirm = client.post(f"/gateway/payin/confirm/{order_id}")  # the payer: no credentials
    assert confirm.status_code == 200 and confirm.json() == {"order_id": order_id, "status": "paid"}
    assert _call(client, store, "GET", status_path).json()["status"] == "paid"

    dispute = _call(
        client, store, "POST", f"/gateway/orders/{order_id}/dispute", {"reason": "not received"}
    )
    assert dispute.status_code == 200 and dispute.json()["status"] == "disputed"


def test_store_cancels_assigned_payin(db: Session, client, world) -> None:
    ref, store, _ = world
    order_id = _create(client, store, ref)
    _process(db, order_id)
    response = _call(client, store, "POST", f"/gateway/orders/{order_id}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "canceled" and body["requisite"] is None
    assert body["cancellation_reason"] == "canceled by store"
    # Canceled orders cannot be confirmed by the payer any more.
    assert client.post(f"/gateway/payin/confirm/{order_id}").status_code == 409


def test_store_cancel_of_unassigned_payout_releases_its_hold(db: Session, client, world) -> None:
    ref, store, _ = world
    order_id = _create(client, store, ref, kind="payout")
    db.expire_all()
    balance = db.scalars(select(BalanceStore).where(BalanceStore.store_id == store.store.id)).one()
    assert balance.frozen == D("10.3")  # C = 10, 3% store commission

    response = _call(
        client, store, "POST", f"/gateway/orders/{order_id}/cancel", {"reason": "customer left"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "failed"
    assert body["failure_reason"] == "canceled by store: customer left"
    assert body["beneficiary"]["number_masked"] == "**** 4242"
    assert "4111" not in json.dumps(body)

    db.expire_all()
    balance = db.scalars(select(BalanceStore).where(BalanceStore.store_id == store.store.id)).one()
    assert (balance.balance, balance.frozen) == (D("1000"), D("0"))
    operations = db.scalars(
        select(BalanceStoreHistory.operation)
        .join(IncomingOrder, IncomingOrder.id == BalanceStoreHistory.incoming_order_id)
        .where(IncomingOrder.public_id == order_id)
        .order_by(BalanceStoreHistory.id)
    ).all()
    assert operations == ["freeze", "release"]
    # The worker no longer takes it.
    incoming_id = db.scalars(
        select(IncomingOrder.id).where(IncomingOrder.public_id == order_id)
    ).one()
    assert process_incoming_order(incoming_id).outcome == "skipped"


def test_another_stores_order_is_404_everywhere(db: Session, client, world) -> None:
    ref, store, other = world
    order_id = _create(client, store, ref)
    _process(db, order_id)
    for method, path in (
        ("GET", f"/gateway/payin/status/{order_id}"),
        ("POST", f"/gateway/orders/{order_id}/cancel"),
        ("POST", f"/gateway/orders/{order_id}/dispute"),
    ):
        response = _call(client, other, method, path)
        assert response.status_code == 404, (path, response.text)
        assert CARD not in response.text
    # The wrong type is 404 too, and the owner's order is untouched.
    assert _call(client, store, "GET", f"/gateway/payout/status/{order_id}").status_code == 404
    owner = _call(client, store, "GET", f"/gateway/payin/status/{order_id}").json()
    assert owner["status"] == "pending"


def test_status_and_actions_need_a_signature(db: Session, client, world) -> None:
    ref, store, _ = world
    order_id = _create(client, store, ref)
    assert client.get(f"/gateway/payin/status/{order_id}").status_code == 401
    assert client.post(f"/gateway/orders/{order_id}/cancel").status_code == 401


def test_dispute_before_assignment_is_409(db: Session, client, world) -> None:
    ref, store, _ = world
    order_id = _create(client, store, ref)
    response = _call(client, store, "POST", f"/gateway/orders/{order_id}/dispute")
    assert response.status_code == 409 and response.json()["code"] == "invalid_status_transition"


def test_unknown_order_payer_confirm_is_404(client) -> None:
    response = client.post("/gateway/payin/confirm/ord_does_not_exist")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_reference_methods(db: Session, client, world) -> None:
    ref, store, _ = world
    response = _call(client, store, "GET", "/gateway/reference/methods")
    assert response.status_code == 200
    assert response.json() == {
        "fiat_currency": ref.fiat.code,
        "methods": [
            {
                "payment_method": {"code": ref.method.code, "name": ref.method.name},
                "banks": [{"code": ref.bank.code, "name": ref.bank.name}],
            }
        ],
    }


def test_payer_page_shows_where_to_pay_and_is_never_cached(db: Session, client, world) -> None:
    ref, store, _ = world
    order_id = _create(client, store, ref)
    waiting = client.get(f"/pay/{order_id}")
    assert waiting.status_code == 200 and CARD not in waiting.text
    assert "state-looking" in waiting.text

    _process(db, order_id)
    page = client.get(f"/pay/{order_id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert CARD in page.text and "Ivanova Anna" in page.text and "1000.00" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"

    payout_id = _create(client, store, ref, kind="payout")
    assert client.get(f"/pay/{payout_id}").status_code == 404
