"""End to end with a real Celery worker: staff make a world work and keep it right.

A store created as a merchant creates it (no traffic, no commission) goes live through
`PUT /admin/stores/{id}/commission` and `PATCH /admin/stores/{id}` (`trafic_access`); the trader
registers a requisite with `POST /trader/requisites` and an admin approves it with
`POST /admin/requisites/{id}/status`; an admin funds the trader's deposit through
`POST /admin/balances/traders/{id}/deposit`; orders flow through the gateway and the worker; one is
completed by the trader, one is disputed and resolved by support, one is held for fraud review,
released through `POST /support/incoming-orders/{id}/release` and then assigned; the staff search
and order view show each; `reconcile` is clean at the end.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jivapay.database.models import AvailableBankMethod, BalanceTrader, StoreCommission
from jivapay.database.utils import atomic_transaction, read_session
from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.services.reconciliation import reconcile
from jivapay.utils.config_loader import set_config_value
from tests.api.staff_support import make_template_staff
from tests.factories import gateway_headers, make_reference, make_store, make_trader

D = Decimal
pytestmark = pytest.mark.slow


@pytest.fixture
def stack(committed_db, celery_worker):  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import app as admin_app
    from jivapay.servers.gateway.server import app as gateway_app
    from jivapay.servers.support.server import app as support_app
    from jivapay.servers.trader.server import app as trader_app

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        # As a merchant creates it: access on, no traffic, no commission.
        world = make_store(session, ref, balance=None, trafic_access=False)
        session.query(StoreCommission).filter_by(store_id=world.store.id).delete()
        trader = make_trader(session, ref, deposit=None)
        # Reference data: the bank offers the method in the fiat (a trader may register it).
        session.add(
            AvailableBankMethod(
                fiat_currency_id=ref.fiat.id, bank_id=ref.bank.id, payment_method_id=ref.method.id
            )
        )
        ids = {
            "store": world.store.id,
            "trader": trader.id,
            "fiat": ref.fiat.code,
            "crypto": ref.crypto.code,
            "method": ref.method.code,
            "bank": ref.bank.code,
        }
        headers = {
            "admin": make_template_staff(session, "admin_full"),
            "support": make_template_staff(session, "support_orders"),
            "trader": {
                "Authorization": f"Bearer {create_access_token(trader.user_id, Role.TRADER)}"
            },
        }
        set_config_value(session, "RATE_LIMIT_DEFAULT", "100000/minute")
        set_config_value(session, "FRAUD_MANUAL_REVIEW_THRESHOLD", "5000")
    celery_worker(concurrency=1)
    with (
        TestClient(gateway_app) as gateway,
        TestClient(admin_app) as admin,
        TestClient(support_app) as support,
        TestClient(trader_app) as trader_api,
    ):
        yield world, ids, headers, gateway, admin, support, trader_api


def _init(
    gateway: TestClient, world: Any, ids: dict[str, Any], merchant_id: str, amount: str
) -> str:
    path = "/gateway/payin/init"
    payload = {
        "merchant_order_id": merchant_id,
        "amount_fiat": amount,
        "fiat_currency": ids["fiat"],
    }
    body = json.dumps(payload).encode()
    r = gateway.post(
        path,
        content=body,
        headers=gateway_headers(world, "POST", path, body, idempotency_key=merchant_id),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["order_id"])


def _wait(fetch: Any, wanted: str, timeout: float = 45.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = fetch()
        if body.get("status") == wanted:
            return body
        time.sleep(0.2)
    raise AssertionError(f"status stayed {body.get('status')!r}, wanted {wanted!r}: {body}")


def test_staff_run_the_platform(stack) -> None:  # type: ignore[no-untyped-def]
    world, ids, headers, gateway, admin, support, trader_api = stack

    # Before going live the store's orders are refused.
    path = "/gateway/payin/init"
    body = json.dumps(
        {"merchant_order_id": "early", "amount_fiat": "1000.00", "fiat_currency": ids["fiat"]}
    ).encode()
    early = gateway.post(
        path,
        content=body,
        headers=gateway_headers(world, "POST", path, body, idempotency_key="early"),
    )
    assert early.status_code >= 400

    # Go live: a commission first (traffic without one is 409), then traffic on.
    store_url = f"/admin/stores/{ids['store']}"
    r = admin.patch(store_url, json={"trafic_access": True}, headers=headers["admin"])
    assert r.status_code == 409 and r.json()["code"] == "commission_missing"
    r = admin.put(
        f"{store_url}/commission",
        json={"commission_payin": "5", "commission_payout": "3"},
        headers=headers["admin"],
    )
    assert r.status_code == 200, r.text
    r = admin.patch(store_url, json={"trafic_access": True}, headers=headers["admin"])
    assert r.status_code == 200 and r.json()["trafic_access"] is True, r.text

    # The trader registers a requisite; it waits for review until an admin approves it.
    r = trader_api.post(
        "/trader/requisites",
        json={
            "fiat_currency": ids["fiat"],
            "payment_method": ids["method"],
            "bank": ids["bank"],
            "number": "40817810099910004312",
            "holder": {"first_name": "Anna", "last_name": "Ivanova"},
            "lower_limit": "100.00",
            "upper_limit": "50000.00",
            "pay_in": True,
            "pay_out": True,
        },
        headers=headers["trader"],
    )
    assert r.status_code == 201 and r.json()["status"] == "pending_review", r.text
    requisite_id = r.json()["id"]
    r = admin.post(
        f"/admin/requisites/{requisite_id}/status",
        json={"status": "approved", "reason": "documents checked"},
        headers=headers["admin"],
    )
    assert r.status_code == 200, r.text
    r = trader_api.get(f"/trader/requisites/{requisite_id}", headers=headers["trader"])
    assert r.json()["status"] == "approved"

    # Fund the trader through the admin route.
    r = admin.post(
        f"/admin/balances/traders/{ids['trader']}/deposit",
        json={"crypto_currency": ids["crypto"], "amount": "500", "reason": "initial deposit"},
        headers={**headers["admin"], "Idempotency-Key": "fund-trader"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["available"] == "500.00000000"

    def staff_order(order_id: str) -> dict[str, Any]:
        return dict(admin.get(f"/admin/orders/{order_id}", headers=headers["admin"]).json())

    # 1. An order flows: assigned by the worker, completed by the trader.
    flowing = _init(gateway, world, ids, "flow-1", "1000.00")
    _wait(lambda: staff_order(flowing), "pending")
    r = trader_api.post(f"/trader/orders/{flowing}/confirm", headers=headers["trader"])
    assert r.json()["status"] == "completed"

    # 2. A dispute opened and resolved by support.
    disputed = _init(gateway, world, ids, "dispute-1", "2000.00")
    _wait(lambda: staff_order(disputed), "pending")
    r = support.post(
        f"/support/orders/{disputed}/dispute",
        json={"reason": "payer sent a receipt by mail"},
        headers=headers["support"],
    )
    assert r.status_code == 200 and r.json()["status"] == "disputed"
    r = support.post(
        f"/support/disputes/{disputed}/resolve",
        json={"outcome": "completed", "reason": "bank statement matches"},
        headers=headers["support"],
    )
    assert r.json() == {"order_id": disputed, "status": "completed", "changed": True}

    # 3. Held for review above the threshold, released by support, then assigned.
    held = _init(gateway, world, ids, "held-1", "6000.00")
    queue = lambda: support.get(  # noqa: E731
        f"/support/incoming-orders?order_id={held}", headers=headers["support"]
    ).json()["items"][0]
    entry = _wait(queue, "manual_review")
    assert entry["fraud_rule"]
    r = support.post(f"/support/incoming-orders/{held}/release", headers=headers["support"])
    assert r.status_code == 200 and r.json()["changed"] is True
    _wait(queue, "assigned")
    detail = _wait(lambda: staff_order(held), "pending")
    actions = [e["action"] for e in detail["timeline"]]
    assert "fraud.review" in actions and "staff.intake_release" in actions
    assert actions.index("fraud.review") < actions.index("staff.intake_release")

    # The staff search sees all three; the money adds up.
    found = admin.get(
        f"/admin/orders?store_id={ids['store']}&sort=amount", headers=headers["admin"]
    ).json()
    assert [o["order_id"] for o in found["items"]] == [flowing, disputed, held]
    with read_session() as session:
        deposit = session.scalars(
            select(BalanceTrader).where(BalanceTrader.trader_id == ids["trader"])
        ).one()
        # 500 - (10 + 20) * 0.97 completed; 60 * 0.97 held for the open order.
        assert (deposit.balance, deposit.frozen) == (D("470.9"), D("58.2"))
        assert reconcile(session) == []
