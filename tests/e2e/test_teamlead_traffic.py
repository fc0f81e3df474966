"""End to end over HTTP with a real Celery worker: the teamlead's traffic switch stops assignment
to its trader (the order keeps retrying, whatever the trader's own work switch says) and
switching it back on lets the next retry assign the order."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from jivapay.database.utils import atomic_transaction
from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.utils.config_loader import set_config_value
from tests.factories import (
    gateway_headers,
    make_reference,
    make_requisite,
    make_staff,
    make_store,
    make_trader,
)

D = Decimal
pytestmark = pytest.mark.slow


def _status(gateway: TestClient, world, order_id: str) -> str:  # type: ignore[no-untyped-def]
    path = f"/gateway/payin/status/{order_id}"
    return str(gateway.get(path, headers=gateway_headers(world, "GET", path)).json()["status"])


def _wait(gateway: TestClient, world, order_id: str, wanted: str, timeout: float = 45.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = _status(gateway, world, order_id)
        if status == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"status stayed {status!r}, wanted {wanted!r}")


def test_teamlead_switch_stops_and_restarts_assignment(committed_db, celery_worker) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.gateway.server import app as gateway_app
    from jivapay.servers.teamlead.server import app as teamlead_app
    from jivapay.servers.trader.server import app as trader_app

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        world = make_store(session, ref)
        lead = make_staff(session, Role.TEAMLEAD)
        trader = make_trader(session, ref, team_lead_id=lead.id)
        make_requisite(session, trader, ref)
        # Retry every second for as long as the test needs.
        set_config_value(session, "RETRY_DELAY_SECONDS", "1")
        set_config_value(session, "RETRY_BACKOFF_FACTOR", "1")
        set_config_value(session, "MAX_ORDER_RETRIES", "1000")
        set_config_value(session, "RATE_LIMIT_DEFAULT", "100000/minute")
        trader_id, fiat = trader.id, ref.fiat.code
        lead_auth = {"Authorization": f"Bearer {create_access_token(lead.user_id, Role.TEAMLEAD)}"}
        trader_auth = {
            "Authorization": f"Bearer {create_access_token(trader.user_id, Role.TRADER)}"
        }
    celery_worker(concurrency=1)
    traffic = f"/teamlead/traders/{trader_id}/traffic"
    with (
        TestClient(gateway_app) as gateway,
        TestClient(teamlead_app) as teamlead,
        TestClient(trader_app) as trader_api,
    ):
        r = teamlead.post(traffic, headers=lead_auth, json={"enabled": False})
        assert r.status_code == 200 and r.json()["changed"] is True
        online = teamlead.get("/teamlead/requisites/online-stats", headers=lead_auth).json()
        assert online["total"] == 0

        body = json.dumps(
            {"merchant_order_id": "tl-1", "amount_fiat": "500.00", "fiat_currency": fiat}
        ).encode()
        path = "/gateway/payin/init"
        r = gateway.post(
            path,
            content=body,
            headers=gateway_headers(world, "POST", path, body, idempotency_key="tl-1"),
        )
        assert r.status_code == 201, r.text
        order_id = r.json()["order_id"]
        _wait(gateway, world, order_id, "retrying")
        # The trader toggling work does not bring the traffic back: still retrying after
        # several more attempts.
        trader_api.post("/trader/work", headers=trader_auth, json={"in_work": False})
        trader_api.post("/trader/work", headers=trader_auth, json={"in_work": True})
        time.sleep(3)
        assert _status(gateway, world, order_id) == "retrying"

        r = teamlead.post(traffic, headers=lead_auth, json={"enabled": True})
        assert r.json()["changed"] is True
        _wait(gateway, world, order_id, "pending")
        orders = teamlead.get("/teamlead/orders", headers=lead_auth).json()
        assert [o["order_id"] for o in orders["items"]] == [order_id]
