"""End to end over HTTP with a real Celery worker: a merchant logs in and creates a store through
the merchant API, an admin sets its commission and enables its traffic through the staff routes,
a trader registers a requisite (`POST /trader/requisites`) that an admin approves
(`POST /admin/requisites/{id}/status`) and an admin funds the trader's deposit
(`POST /admin/balances/traders/{id}/deposit`); a PayIn through the gateway is assigned to a trader's requisite and completes; the merchant's
order list, balances and statistics show exactly the money `jivapay reconcile` agrees with; a key
rotation stops the old key at the gateway."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from jivapay.database.models import (
    AvailableBankMethod,
    BalancePlatform,
    BalanceStore,
    BalanceTrader,
    MerchantStore,
)
from jivapay.database.utils import atomic_transaction, read_session
from jivapay.enums import Role
from jivapay.permissions import Permission
from jivapay.utils.config_loader import set_config_value
from tests.api.merchant_support import bearer, make_merchant, make_staff
from tests.factories import (
    StoreWorld,
    gateway_headers,
    make_reference,
    make_trader,
)

D = Decimal
pytestmark = pytest.mark.slow
PASSWORD = "factory-password-1"  # what tests/factories gives every user


@pytest.fixture
def stack(committed_db, celery_worker):  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import app as admin_app
    from jivapay.servers.gateway.server import app as gateway_app
    from jivapay.servers.merchant.server import app as merchant_app
    from jivapay.servers.trader.server import app as trader_app

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("80"))
        merchant = make_merchant(session)
        admin = make_staff(
            session,
            Role.ADMIN,
            [
                Permission.STORES_EDIT_ALL,
                Permission.STORES_TRAFFIC_ALL,
                Permission.STORE_COMMISSIONS_EDIT_ALL,
                Permission.REQUISITES_MODERATE_ALL,
                Permission.BALANCES_ADJUST_ALL,
            ],
        )
        trader = make_trader(
            session, ref, payin_percent=D("2.5"), payout_percent=D("1.5"), deposit=None
        )
        # Reference data: the bank offers the method in the fiat (a trader may register it).
        session.add(
            AvailableBankMethod(
                fiat_currency_id=ref.fiat.id, bank_id=ref.bank.id, payment_method_id=ref.method.id
            )
        )
        ids = {
            "method": ref.method.code,
            "bank": ref.bank.code,
            "fiat": ref.fiat.code,
            "crypto": ref.crypto.code,
            "crypto_id": ref.crypto.id,
            "trader": trader.id,
            "merchant_email": merchant.user.email,
        }
        auth = {
            "admin": bearer(admin.user_id, Role.ADMIN),
            "trader": bearer(trader.user_id, Role.TRADER),
        }
        set_config_value(session, "RATE_LIMIT_DEFAULT", "100000/minute")
    celery_worker(concurrency=1)
    with (
        TestClient(gateway_app) as gateway,
        TestClient(merchant_app) as merchant_api,
        TestClient(admin_app) as admin_api,
        TestClient(trader_app) as trader_api,
    ):
        yield ids, auth, gateway, merchant_api, admin_api, trader_api


def _signed_post(gateway: TestClient, keys: StoreWorld, path: str, payload: dict, key: str):  # type: ignore[no-untyped-def,type-arg]
    body = json.dumps(payload).encode()
    headers = gateway_headers(keys, "POST", path, body, idempotency_key=key)
    return gateway.post(path, content=body, headers=headers)


def _wait_status(gateway: TestClient, keys: StoreWorld, path: str, wanted: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 45
    body: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        body = gateway.get(path, headers=gateway_headers(keys, "GET", path)).json()
        if body.get("status") == wanted:
            return body
        time.sleep(0.2)
    raise AssertionError(f"status stayed {body.get('status')!r}, wanted {wanted!r}")


def test_merchant_flow(stack) -> None:  # type: ignore[no-untyped-def]
    ids, auth, gateway, merchant_api, admin_api, trader_api = stack

    # The merchant logs in and creates a store: not live until an admin acts.
    r = merchant_api.post(
        "/merchant/auth/token", data={"username": ids["merchant_email"], "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    mauth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = merchant_api.post(
        "/merchant/stores",
        json={
            "store_name": "E2E shop",
            "fiat_currency": ids["fiat"],
            "crypto_currency": ids["crypto"],
            "lower_limit": "100.00",
            "upper_limit": "100000.00",
            "callback_url": "http://127.0.0.1:9/hooks",
        },
        headers=mauth,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    sid = created["id"]
    assert created["takes_orders"] is False
    with read_session() as session:
        store_row = session.get(MerchantStore, sid)
    keys = StoreWorld(store_row, None, created["public_api_key"], created["private_api_key"])  # type: ignore[arg-type]
    payin = {"merchant_order_id": "e2e-1", "amount_fiat": "4000.00", "fiat_currency": ids["fiat"]}
    r = _signed_post(gateway, keys, "/gateway/payin/init", payin, "k-0")
    assert r.status_code == 403 and r.json()["code"] == "store_traffic_disabled"

    # The admin sets the commission, then enables traffic, through the staff routes.
    r = admin_api.put(
        f"/admin/stores/{sid}/commission",
        json={"commission_payin": "4", "commission_payout": "2.5"},
        headers=auth["admin"],
    )
    assert r.status_code == 200, r.text
    r = admin_api.patch(f"/admin/stores/{sid}", json={"trafic_access": True}, headers=auth["admin"])
    assert r.status_code == 200 and r.json()["takes_orders"] is True

    # The trader registers a requisite, an admin approves it and funds the trader's deposit.
    r = trader_api.post(
        "/trader/requisites",
        json={
            "fiat_currency": ids["fiat"],
            "payment_method": ids["method"],
            "bank": ids["bank"],
            "number": "40817810070001112222",
            "holder": {"first_name": "Anna", "last_name": "Ivanova"},
            "lower_limit": "100.00",
            "upper_limit": "100000.00",
            "pay_in": True,
            "pay_out": True,
        },
        headers=auth["trader"],
    )
    assert r.status_code == 201 and r.json()["status"] == "pending_review", r.text
    r = admin_api.post(
        f"/admin/requisites/{r.json()['id']}/status",
        json={"status": "approved", "reason": "documents checked"},
        headers=auth["admin"],
    )
    assert r.status_code == 200, r.text
    r = admin_api.post(
        f"/admin/balances/traders/{ids['trader']}/deposit",
        json={"crypto_currency": ids["crypto"], "amount": "2000", "reason": "initial deposit"},
        headers={**auth["admin"], "Idempotency-Key": "fund-trader"},
    )
    assert r.status_code == 200 and r.json()["available"] == "2000.00000000", r.text

    # A PayIn: C = 4000 / 80 = 50; store 4 % = 2; trader 2.5 % = 1.25; platform 0.75.
    r = _signed_post(gateway, keys, "/gateway/payin/init", payin, "k-1")
    assert r.status_code == 201, r.text
    order_id = r.json()["order_id"]
    _wait_status(gateway, keys, f"/gateway/payin/status/{order_id}", "pending")
    assert gateway.post(f"/gateway/payin/confirm/{order_id}").json()["status"] == "paid"
    r = trader_api.post(f"/trader/orders/{order_id}/confirm", headers=auth["trader"])
    assert r.status_code == 200 and r.json()["status"] == "completed"

    # What the merchant sees.
    orders = merchant_api.get("/merchant/orders", headers=mauth).json()
    assert orders["total"] == 1  # the attempt refused before traffic was enabled wrote nothing
    done = orders["items"][0]
    assert (done["status"], done["amount_crypto"], done["store_commission"]) == (
        "completed",
        "50.00000000",
        "2.00000000",
    )
    assert done["requisite"]["number_masked"] == "**** 2222"
    balances = merchant_api.get("/merchant/balances", headers=mauth).json()["items"]
    assert [(b["balance"], b["frozen"], b["available"]) for b in balances] == [
        ("48.00000000", "0.00000000", "48.00000000")
    ]
    history = merchant_api.get("/merchant/balances/history", headers=mauth).json()["items"]
    assert [(h["operation"], h["amount"], h["order_id"]) for h in history] == [
        ("payin", "48.00000000", order_id)
    ]
    stats = merchant_api.get("/merchant/statistics", headers=mauth).json()["items"]
    row = next(s for s in stats if s["order_type"] == "payin")
    assert (row["completed_count"], row["completed_turnover_fiat"]) == (1, "4000.00")
    assert (row["completed_turnover_crypto"], row["commission_paid"]) == (
        "50.00000000",
        "2.00000000",
    )
    assert row["conversion"] == "1.0000"

    # The database agrees, and so does `jivapay reconcile`.
    with read_session() as session:
        store_balance = session.scalars(select(BalanceStore).filter_by(store_id=sid)).one()
        trader_balance = session.scalars(
            select(BalanceTrader).filter_by(trader_id=ids["trader"])
        ).one()
        platform = session.scalars(
            select(BalancePlatform).filter_by(crypto_currency_id=ids["crypto_id"])
        ).one()
    assert store_balance.balance == D("48")
    assert trader_balance.balance == D("2000") - D("48.75")
    assert platform.balance == D("0.75")
    from jivapay.cli import app as cli

    result = CliRunner().invoke(cli, ["reconcile"])
    assert result.exit_code == 0, result.output
    assert "reconciliation clean" in result.output

    # Rotation: the old key stops at once, the new one works.
    r = merchant_api.post(f"/merchant/stores/{sid}/keys/rotate", headers=mauth)
    assert r.status_code == 200
    new = StoreWorld(store_row, None, r.json()["public_api_key"], r.json()["private_api_key"])  # type: ignore[arg-type]
    path = f"/gateway/payin/status/{order_id}"
    assert gateway.get(path, headers=gateway_headers(keys, "GET", path)).status_code == 401
    r = gateway.get(path, headers=gateway_headers(new, "GET", path))
    assert r.status_code == 200 and r.json()["status"] == "completed"
