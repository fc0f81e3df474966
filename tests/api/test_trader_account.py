"""The trader's account over HTTP: balances and their history, profile, own password, statistics."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jivapay.database.base import utcnow
from jivapay.database.models import AuditLog, OrderHistory, TimeZone, Trader
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app
from jivapay.servers.trader.server import ROUTERS
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from tests.api.test_trader_requisites import auth, is_problem
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

D = Decimal


@pytest.fixture
def client(db) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(build_app(Role.TRADER, routers=ROUTERS))


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    store = make_store(db, ref, balance=D("1000"))
    mine = make_trader(db, ref)
    other = make_trader(db, ref, priority=9)
    make_requisite(db, mine, ref)
    return ref, store, mine, other


def _order(db, store, ref, amount: str = "500.00") -> OrderHistory:  # type: ignore[no-untyped-def]
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D(amount)).id)
    order = db.get(OrderHistory, res.order_id)
    assert order is not None
    return order


def _actor(trader: Trader) -> osm.Actor:
    return osm.Actor(osm.ActorKind.TRADER, user_id=trader.user_id, trader_id=trader.id)


def test_balances_and_history_follow_an_order(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, mine, other = world
    code = ref.crypto.code
    r = client.get("/trader/balances", headers=auth(mine))
    assert r.json() == {
        "deposits": [
            {
                "crypto_currency": code,
                "balance": "10000.00000000",
                "frozen": "0.00000000",
                "available": "10000.00000000",
            }
        ],
        "fiat": [],
    }
    order = _order(db, store, ref)  # 500 fiat at 50 = 10 crypto; trader 3 %: hold 9.7
    deposit = client.get("/trader/balances", headers=auth(mine)).json()["deposits"][0]
    assert deposit["frozen"] == "9.70000000" and deposit["available"] == "9990.30000000"
    osm.transition(db, event=osm.OrderEvent.CONFIRM, public_id=order.public_id, actor=_actor(mine))
    body = client.get("/trader/balances", headers=auth(mine)).json()
    assert body["deposits"][0] == {
        "crypto_currency": code,
        "balance": "9990.30000000",
        "frozen": "0.00000000",
        "available": "9990.30000000",
    }
    assert body["fiat"] == [{"fiat_currency": ref.fiat.code, "balance": "500.00"}]

    history = client.get("/trader/balances/history", headers=auth(mine)).json()
    ops = [(i["operation"], i["amount"], i["order_id"]) for i in history["items"]]
    assert history["total"] == 3
    assert ops[-1] == ("deposit", "10000.00000000", None)
    assert ("freeze", "0.00000000", order.public_id) in ops
    assert ("payin", "-9.70000000", order.public_id) in ops
    assert history["items"][0]["balance_after"] == "9990.30000000"
    fiat = client.get("/trader/balances/history?kind=fiat", headers=auth(mine)).json()
    assert [(i["amount"], i["currency"], i["order_id"]) for i in fiat["items"]] == [
        ("500.00", ref.fiat.code, order.public_id)
    ]
    assert fiat["items"][0]["frozen_after"] is None
    only = client.get("/trader/balances/history?operation=deposit", headers=auth(mine)).json()
    assert only["total"] == 1
    assert (
        client.get(f"/trader/balances/history?currency={code}", headers=auth(mine)).json()["total"]
        == 3
    )
    assert (
        client.get("/trader/balances/history?currency=NOPE", headers=auth(mine)).json()["total"]
        == 0
    )

    # The other trader sees only their own deposit row.
    theirs = client.get("/trader/balances/history", headers=auth(other)).json()
    assert theirs["total"] == 1 and order.public_id not in str(theirs)
    for bad in (
        "kind=gold",
        "operation=steal",
        "date_from=yesterday",
        "offset=-1",
        "date_to=2026-01-01T00:00:00",  # no offset
    ):
        is_problem(client.get(f"/trader/balances/history?{bad}", headers=auth(mine)), 422)
    r = client.get(
        "/trader/balances/history?date_from=2026-02-01T00:00:00Z&date_to=2026-01-01T00:00:00Z",
        headers=auth(mine),
    )
    is_problem(r, 422, "bad_period")


def test_profile_read_and_update(client, db, world) -> None:  # type: ignore[no-untyped-def]
    _, _, mine, _ = world
    tz = TimeZone(name=f"Test/Zone{mine.id}", utc_offset_minutes=180)
    db.add(tz)
    db.flush()
    r = client.get("/trader/profile", headers=auth(mine))
    body = r.json()
    assert body["id"] == mine.id and body["trafic_priority"] == 5 and body["in_work"] is True
    assert body["commission"]["commission_payin"] == "3.0000"
    assert body["team"] is None and body["time_zone"] is None

    change = {"first_name": "Oleg", "last_name": "Petrov", "time_zone": tz.name}
    r = client.patch("/trader/profile", headers=auth(mine), json=change)
    assert r.status_code == 200 and r.json()["changed"] is True
    assert r.json()["first_name"] == "Oleg" and r.json()["time_zone"] == tz.name
    assert (
        client.patch("/trader/profile", headers=auth(mine), json=change).json()["changed"] is False
    )
    row = db.scalars(select(AuditLog).where(AuditLog.action == "trader.profile_changed")).one()
    assert row.details["changes"]["first_name"] == {"from": None, "to": "Oleg"}

    before = db.scalar(select(func.count()).select_from(AuditLog))
    for bad, code in (
        ({"trafic_priority": 0}, "validation_failed"),
        ({"pay_in": False}, "validation_failed"),
        ({"team_lead_id": 1}, "validation_failed"),
        ({"time_zone": "Mars/Olympus"}, "unknown_time_zone"),
        ({"first_name": None}, "validation_failed"),
        ({"first_name": ""}, "validation_failed"),
    ):
        is_problem(client.patch("/trader/profile", headers=auth(mine), json=bad), 422, code)
    assert db.scalar(select(func.count()).select_from(AuditLog)) == before
    db.expire_all()
    assert db.get(Trader, mine.id).trafic_priority == 5
    r = client.patch("/trader/profile", headers=auth(mine), json={"time_zone": None})
    assert r.json()["time_zone"] is None and r.json()["changed"] is True


def test_statistics_for_a_period(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, mine, other = world
    done = _order(db, store, ref, "500.00")
    canceled = _order(db, store, ref, "300.00")
    disputed = _order(db, store, ref, "200.00")
    osm.transition(db, event=osm.OrderEvent.CONFIRM, public_id=done.public_id, actor=_actor(mine))
    osm.cancel_order(db, public_id=canceled.public_id, actor=_actor(mine), reason="no money")
    osm.open_dispute(db, public_id=disputed.public_id, actor=_actor(mine), reason="odd")

    r = client.get("/trader/statistics", headers=auth(mine))
    assert r.status_code == 200
    (group,) = r.json()["groups"]
    assert group["order_type"] == "payin" and group["orders"] == 3 and group["disputes"] == 1
    assert group["by_status"]["completed"] == 1 and group["by_status"]["canceled"] == 1
    assert group["by_status"]["disputed"] == 1 and group["by_status"]["pending"] == 0
    assert group["completed_turnover_fiat"] == [{"currency": ref.fiat.code, "amount": "500.00"}]
    assert group["completed_turnover_crypto"] == [
        {"currency": ref.crypto.code, "amount": "10.00000000"}
    ]
    assert group["commission_earned"] == [{"currency": ref.crypto.code, "amount": "0.30000000"}]
    assert client.get("/trader/statistics", headers=auth(other)).json()["groups"] == []

    future = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = client.get(f"/trader/statistics?date_from={future}", headers=auth(mine))
    is_problem(r, 422, "bad_period")
    for bad in (
        "date_from=2024-01-01T00:00:00Z&date_to=2025-06-01T00:00:00Z",
        "date_from=2026-01-01T00:00:00",  # no offset
        "date_to=never",
    ):
        is_problem(client.get(f"/trader/statistics?{bad}", headers=auth(mine)), 422)
