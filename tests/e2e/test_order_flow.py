"""End to end over HTTP with a real Celery worker: a PayIn and a PayOut from gateway intake to
completed balances, with exact amounts, history and platform profit, and reconciliation clean."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jivapay.database.models import (
    BalancePlatform,
    BalancePlatformHistory,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    BalanceTraderFiat,
)
from jivapay.database.utils import atomic_transaction, read_session
from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.services.reconciliation import reconcile
from jivapay.utils.config_loader import set_config_value
from tests.factories import gateway_headers, make_reference, make_requisite, make_store, make_trader
from tests.sample_files import pdf_bytes

D = Decimal
pytestmark = pytest.mark.slow


@pytest.fixture
def stack(committed_db, celery_worker):  # type: ignore[no-untyped-def]
    from jivapay.servers.gateway.server import app as gateway_app
    from jivapay.servers.trader.server import app as trader_app

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("80"))
        world = make_store(
            session, ref, payin_percent=D("4"), payout_percent=D("2.5"), balance=D("1000")
        )
        trader = make_trader(
            session, ref, payin_percent=D("2.5"), payout_percent=D("1.5"), deposit=D("2000")
        )
        make_requisite(session, trader, ref, number="2200700011112222")
        ids = {
            "store": world.store.id,
            "trader": trader.id,
            "crypto": ref.crypto.id,
            "fiat": ref.fiat.code,
        }
        token = create_access_token(trader.user_id, Role.TRADER)
        # The tests poll order status like a merchant integration would, only faster.
        set_config_value(session, "RATE_LIMIT_DEFAULT", "100000/minute")
    celery_worker(concurrency=1)
    with TestClient(gateway_app) as gateway, TestClient(trader_app) as trader_api:
        yield world, ids, gateway, trader_api, {"Authorization": f"Bearer {token}"}


def _post(client: TestClient, world, path: str, payload: dict[str, object], key: str):  # type: ignore[no-untyped-def]
    body = json.dumps(payload).encode()
    return client.post(
        path, content=body, headers=gateway_headers(world, "POST", path, body, idempotency_key=key)
    )


def _get(client: TestClient, world, path: str):  # type: ignore[no-untyped-def]
    return client.get(path, headers=gateway_headers(world, "GET", path))


def _wait_status(client: TestClient, world, path: str, wanted: str, timeout: float = 45.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = _get(client, world, path).json()
        if body.get("status") == wanted:
            return body
        time.sleep(0.2)
    raise AssertionError(f"status stayed {body.get('status')!r}, wanted {wanted!r}: {body}")


def _one(model, **key):  # type: ignore[no-untyped-def]
    with read_session() as session:
        return session.scalars(select(model).filter_by(**key)).one()


def test_payin_end_to_end(stack) -> None:  # type: ignore[no-untyped-def]
    world, ids, gateway, trader_api, auth = stack
    r = _post(
        gateway,
        world,
        "/gateway/payin/init",
        {"merchant_order_id": "shop-1", "amount_fiat": "4000.00", "fiat_currency": ids["fiat"]},
        "k-payin-1",
    )
    assert r.status_code == 201, r.text
    created = r.json()
    order_id = created["order_id"]
    # C = 4000 / 80 = 50; store 4% = 2; trader 2.5% = 1.25; profit 0.75; trader hold 48.75
    assert (created["amount_crypto"], created["exchange_rate"]) == ("50.00000000", "80.00000000")
    assert created["payment_url"].endswith(f"/pay/{order_id}")

    status = _wait_status(gateway, world, f"/gateway/payin/status/{order_id}", "pending")
    assert status["requisite"]["number"] == "2200700011112222"
    assert _one(BalanceTrader, trader_id=ids["trader"]).frozen == D("48.75")

    r = gateway.post(f"/gateway/payin/confirm/{order_id}")
    assert r.status_code == 200 and r.json()["status"] == "paid"
    r = trader_api.post(f"/trader/orders/{order_id}/confirm", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert _get(gateway, world, f"/gateway/payin/status/{order_id}").json()["status"] == "completed"

    deposit = _one(BalanceTrader, trader_id=ids["trader"])
    assert (deposit.balance, deposit.frozen) == (D("2000") - D("48.75"), D("0"))
    assert _one(BalanceStore, store_id=ids["store"]).balance == D("1000") + D("48")
    assert _one(BalancePlatform, crypto_currency_id=ids["crypto"]).balance == D("0.75")
    assert _one(BalanceTraderFiat, trader_id=ids["trader"]).balance == D("4000.00")
    with read_session() as session:
        ops = session.execute(
            select(
                BalanceTraderCryptoHistory.operation,
                BalanceTraderCryptoHistory.amount,
                BalanceTraderCryptoHistory.frozen_delta,
            )
            .where(BalanceTraderCryptoHistory.order_id.is_not(None))
            .order_by(BalanceTraderCryptoHistory.id)
        ).all()
        assert [tuple(o) for o in ops] == [
            ("freeze", D("0"), D("48.75")),
            ("payin", D("-48.75"), D("-48.75")),
        ]
        profit_rows = session.scalar(select(func.count()).select_from(BalancePlatformHistory))
        assert profit_rows == 1
        assert reconcile(session) == []


def test_payout_end_to_end(stack, s3_endpoint) -> None:  # type: ignore[no-untyped-def]
    world, ids, gateway, trader_api, auth = stack
    payload = {
        "merchant_order_id": "payout-1",
        "amount_crypto": "10",
        "fiat_currency": ids["fiat"],
        "beneficiary": {"number": "4111 1111 1111 1111", "name": "Ivan Payee"},
    }
    with read_session() as session:
        from jivapay.database.models import Bank, PaymentMethod, ReqTrader

        req = session.scalars(select(ReqTrader).filter_by(trader_id=ids["trader"])).one()
        payload["bank"] = session.get(Bank, req.bank_id).code
        payload["payment_method"] = session.get(PaymentMethod, req.payment_method_id).code
    from jivapay.database.models import AvailableBankMethod, FiatCurrency

    with atomic_transaction() as session:
        fiat = session.scalars(select(FiatCurrency).filter_by(code=ids["fiat"])).one()
        session.add(
            AvailableBankMethod(
                fiat_currency_id=fiat.id,
                bank_id=req.bank_id,
                payment_method_id=req.payment_method_id,
            )
        )
    r = _post(gateway, world, "/gateway/payout/init", payload, "k-payout-1")
    assert r.status_code == 201, r.text
    order_id = r.json()["order_id"]
    # C = 10, F = 800.00; store 2.5% = 0.25 -> store hold 10.25; trader 1.5% = 0.15
    assert r.json()["amount_fiat"] == "800.00"
    assert _one(BalanceStore, store_id=ids["store"]).frozen == D("10.25")

    _wait_status(gateway, world, f"/gateway/payout/status/{order_id}", "pending")
    # A PayOut is confirmed with the receipt of the transfer sent (stored in S3).
    receipt = {"receipt": ("sent.pdf", pdf_bytes(), "application/pdf")}
    r = trader_api.post(f"/trader/orders/{order_id}/confirm", headers=auth, files=receipt)
    assert r.status_code == 200 and r.json()["status"] == "completed"

    store = _one(BalanceStore, store_id=ids["store"])
    assert (store.balance, store.frozen) == (D("1000") - D("10.25"), D("0"))
    assert _one(BalanceTrader, trader_id=ids["trader"]).balance == D("2000") + D("10.15")
    assert _one(BalancePlatform, crypto_currency_id=ids["crypto"]).balance == D("0.10")
    assert _one(BalanceTraderFiat, trader_id=ids["trader"]).balance == D("-800.00")
    with read_session() as session:
        ops = session.scalars(
            select(BalanceStoreHistory.operation)
            .where(BalanceStoreHistory.incoming_order_id.is_not(None))
            .order_by(BalanceStoreHistory.id)
        ).all()
        assert ops == ["freeze", "payout"]
        assert reconcile(session) == []


def test_retry_until_a_requisite_fits_then_expiry_releases_the_hold(stack) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from jivapay.database.models import OrderHistory
    from jivapay.worker.tasks import expire_overdue_orders

    world, ids, gateway, trader_api, auth = stack
    with atomic_transaction() as session:
        set_config_value(session, "RETRY_DELAY_SECONDS", 1)
        set_config_value(session, "RETRY_BACKOFF_FACTOR", "1")
        set_config_value(session, "MAX_ORDER_RETRIES", 100)
    assert trader_api.post("/trader/work", json={"in_work": False}, headers=auth).json() == {
        "in_work": False,
        "changed": True,
    }

    r = _post(
        gateway,
        world,
        "/gateway/payin/init",
        {"merchant_order_id": "shop-r", "amount_fiat": "800.00", "fiat_currency": ids["fiat"]},
        "k-r",
    )
    order_id = r.json()["order_id"]
    status = _wait_status(gateway, world, f"/gateway/payin/status/{order_id}", "retrying")
    assert status["failure_reason"] == "requisite_not_found"

    trader_api.post("/trader/work", json={"in_work": True}, headers=auth)
    _wait_status(gateway, world, f"/gateway/payin/status/{order_id}", "pending")
    assert _one(BalanceTrader, trader_id=ids["trader"]).frozen > 0

    with atomic_transaction() as session:
        order = session.scalars(select(OrderHistory).filter_by(public_id=order_id)).one()
        order.expires_at = order.expires_at - timedelta(days=1)
    assert expire_overdue_orders.apply().get() == 1
    assert _get(gateway, world, f"/gateway/payin/status/{order_id}").json()["status"] == "expired"
    assert _one(BalanceTrader, trader_id=ids["trader"]).frozen == 0
    with read_session() as session:
        assert reconcile(session) == []
