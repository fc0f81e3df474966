"""Trader controls on the staff servers: the overview, one trader's picture, settings with the
priority kept on the requisites, the traffic switch against the real selector, and the admin-only
commission (new orders use it, open orders keep theirs)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    AuditLog,
    OrderHistory,
    ReqTrader,
    TeamLead,
    TimeZone,
    Trader,
    TraderCommission,
)
from jivapay.enums import Role
from jivapay.servers.admin.server import ROUTERS as ADMIN_ROUTERS
from jivapay.servers.app_factory import build_app
from jivapay.servers.support.server import ROUTERS as SUPPORT_ROUTERS
from jivapay.servers.trader.server import ROUTERS as TRADER_ROUTERS
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from tests.api.test_staff_requisites import staff
from tests.api.test_trader_requisites import auth, is_problem
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
    make_user,
)

D = Decimal
CARD = "2200123412345678"


@pytest.fixture
def apps(db) -> dict[str, TestClient]:  # type: ignore[no-untyped-def]
    return {
        "trader": TestClient(build_app(Role.TRADER, routers=TRADER_ROUTERS)),
        "support": TestClient(build_app(Role.SUPPORT, routers=SUPPORT_ROUTERS)),
        "admin": TestClient(build_app(Role.ADMIN, routers=ADMIN_ROUTERS)),
    }


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    store = make_store(db, ref, balance=D("1000"))
    trader = make_trader(db, ref)
    requisite = make_requisite(db, trader, ref, number=CARD)
    return ref, store, trader, requisite


def audit_total(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AuditLog)) or 0


def test_trader_detail_and_stats(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, requisite = world
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("500.00")).id)
    order = db.get(OrderHistory, res.order_id)
    viewer = staff(db, Role.SUPPORT, "traders:view:all", "requisites:view:all")

    r = apps["support"].get(f"/support/traders/{trader.id}", headers=viewer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["profile"]["id"] == trader.id and body["profile"]["email"].endswith("@factory.test")
    assert body["commission_history"][0]["commission_payin"] == "3.0000"
    assert [q["id"] for q in body["requisites"]] == [requisite.id]
    assert body["requisites"][0]["number_masked"] == "**** 5678" and CARD not in r.text
    assert body["requisites"][0]["usage"]["open_orders"] == 1
    # Balances and orders are behind their own grants, here as on their own routes.
    assert body["balances"] is None and body["recent_orders"] is None
    full = staff(
        db,
        Role.SUPPORT,
        "traders:view:all",
        "requisites:view:all",
        "balances:view:all",
        "orders:view:all",
    )
    body = apps["support"].get(f"/support/traders/{trader.id}", headers=full).json()
    assert body["balances"]["deposits"][0]["frozen"] == "9.70000000"
    assert [o["order_id"] for o in body["recent_orders"]] == [order.public_id]

    is_problem(apps["support"].get("/support/traders/987654321", headers=viewer), 404)
    is_problem(apps["support"].get("/support/traders/0", headers=viewer), 422)
    nothing = staff(db, Role.SUPPORT, "orders:view:all")
    is_problem(apps["support"].get(f"/support/traders/{trader.id}", headers=nothing), 403)
    is_problem(apps["support"].get("/support/traders/stats", headers=nothing), 403)
    is_problem(apps["admin"].get(f"/admin/traders/{trader.id}", headers=auth(trader)), 403)

    stats = apps["support"].get("/support/traders/stats", headers=viewer).json()
    assert stats["traders"] >= 1 and stats["in_work"] >= 1
    assert stats["requisites_by_status"]["approved"] >= 1
    assert sum(g["orders"] for g in stats["orders"]["groups"]) >= 1
    r = apps["support"].get(
        "/support/traders/stats?date_from=2020-01-01T00:00:00Z&date_to=2022-01-01T00:00:00Z",
        headers=viewer,
    )
    is_problem(r, 422, "bad_period")


def test_update_trader_syncs_priority_and_validates(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, trader, requisite = world
    second = make_requisite(db, trader, ref)
    lead_user = make_user(db, Role.TEAMLEAD)
    lead = TeamLead(user_id=lead_user.id, first_name="Tim", last_name="Lead")
    tz = TimeZone(name=f"Test/Staff{trader.id}", utc_offset_minutes=300)
    db.add_all([lead, tz])
    db.flush()
    editor = staff(db, Role.SUPPORT, "traders:edit:all")
    url = f"/support/traders/{trader.id}"
    change = {
        "trafic_priority": 2,
        "pay_out": False,
        "base_lower_limit": "100.00",
        "base_upper_limit": "9000.00",
        "team_lead_id": lead.id,
        "time_zone": tz.name,
        "reason": "onboarding",
    }
    r = apps["support"].patch(url, headers=editor, json=change)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changed"] is True and body["trafic_priority"] == 2 and body["pay_out"] is False
    assert body["team"] == {"teamlead_id": lead.id, "name": "Tim Lead"}
    assert body["time_zone"] == tz.name and body["base_upper_limit"] == "9000.00"
    db.expire_all()
    assert {db.get(ReqTrader, q.id).distribution_weight for q in (requisite, second)} == {2}
    assert apps["support"].patch(url, headers=editor, json=change).json()["changed"] is False
    row = db.scalars(select(AuditLog).where(AuditLog.action == "trader.settings_changed")).one()
    assert row.details["changes"]["trafic_priority"] == {"from": 5, "to": 2}
    assert row.details["reason"] == "onboarding"

    before = audit_total(db)
    for bad, code in (
        ({"base_lower_limit": "9500.00"}, "limits_unordered"),
        ({"team_lead_id": 987654321}, "unknown_teamlead"),
        ({"time_zone": "Nowhere/City"}, "unknown_time_zone"),
        ({"pay_in": None}, "validation_failed"),
        ({"trafic_priority": -1}, "validation_failed"),
        ({"trafic_priority": "1"}, "validation_failed"),
        ({"base_upper_limit": 100.505}, "validation_failed"),  # three places, not rounded
        ({"in_work": True}, "validation_failed"),  # the trader's own switch
        ({"commission_payin": "1"}, "validation_failed"),
    ):
        is_problem(apps["support"].patch(url, headers=editor, json=bad), 422, code)
    assert audit_total(db) == before
    db.expire_all()
    assert db.get(Trader, trader.id).base_lower_limit == D("100.00")

    # A grant for one trader edits that trader only.
    other = make_trader(db, ref)
    one = staff(db, Role.SUPPORT, f"traders:edit:trader:{trader.id}")
    r = apps["support"].patch(url, headers=one, json={"pay_out": True})
    assert r.status_code == 200 and r.json()["changed"] is True
    is_problem(
        apps["support"].patch(f"/support/traders/{other.id}", headers=one, json={"pay_out": True}),
        403,
    )
    is_problem(
        apps["support"].patch("/support/traders/987654321", headers=editor, json={"pay_in": True}),
        404,
    )
    # Clearing the team and the base limits.
    r = apps["support"].patch(
        url,
        headers=editor,
        json={"team_lead_id": None, "base_lower_limit": None, "base_upper_limit": None},
    )
    assert r.json()["team"] is None and r.json()["base_upper_limit"] is None


def test_traffic_switch_stops_and_restarts_assignment(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    switcher = staff(db, Role.ADMIN, "traders:traffic:all")
    url = f"/admin/traders/{trader.id}/traffic"
    r = apps["admin"].post(url, headers=switcher, json={"enabled": False, "reason": "complaints"})
    assert r.json() == {
        "trader_id": trader.id,
        "is_traffic_enabled_by_teamlead": False,
        "changed": True,
    }
    assert (
        apps["admin"].post(url, headers=switcher, json={"enabled": False}).json()["changed"]
        is False
    )
    # The trader's own work switch cannot override it.
    r = apps["trader"].post("/trader/work", headers=auth(trader), json={"in_work": True})
    assert r.status_code == 200
    assert process_incoming_order(make_incoming(db, store, ref).id).order_id is None

    apps["admin"].post(url, headers=switcher, json={"enabled": True})
    assert process_incoming_order(make_incoming(db, store, ref).id).order_id is not None
    for bad in ({}, {"enabled": "yes"}, {"enabled": True, "extra": 1}):
        is_problem(apps["admin"].post(url, headers=switcher, json=bad), 422)
    is_problem(
        apps["admin"].post(
            f"/admin/traders/{trader.id}/traffic",
            headers=staff(db, Role.ADMIN, "traders:view:all"),
            json={"enabled": False},
        ),
        403,
    )
    assert db.scalar(select(func.count()).where(AuditLog.action == "trader.traffic_changed")) == 2


def test_commission_as_json_numbers_is_read_exactly(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    """A percentage sent as a JSON number is read as written; a fifth place is refused, not
    rounded."""
    _, _, trader, _ = world
    admin = {**staff(db, Role.ADMIN, "trader_commissions:edit:all")}
    headers = {**admin, "Content-Type": "application/json"}
    url = f"/admin/traders/{trader.id}/commission"
    document = '{"commission_payin": 2.5, "commission_payout": 1.2345, "reason": "volume tier"}'
    r = apps["admin"].put(url, headers=headers, content=document)
    assert r.status_code == 200, r.text
    assert (r.json()["commission_payin"], r.json()["commission_payout"]) == ("2.5000", "1.2345")
    latest = db.scalars(
        select(TraderCommission)
        .where(TraderCommission.trader_id == trader.id)
        .order_by(TraderCommission.id.desc())
    ).first()
    assert latest is not None and latest.commission_payout == D("1.2345")
    before = audit_total(db)
    document = '{"commission_payin": 2.5, "commission_payout": 1.23456, "reason": "x"}'
    r = apps["admin"].put(url, headers=headers, content=document)
    is_problem(r, 422, "validation_failed")
    assert any("decimal places" in e["msg"] for e in r.json()["errors"]), r.text
    assert audit_total(db) == before


def test_commission_is_admin_only_and_applies_to_new_orders(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _ = world
    open_order = db.get(
        OrderHistory, process_incoming_order(make_incoming(db, store, ref).id).order_id
    )
    assert open_order.trader_commission_rate == D("3")
    admin = staff(db, Role.ADMIN, "trader_commissions:edit:all")
    url = f"/admin/traders/{trader.id}/commission"
    new = {"commission_payin": "2.5", "commission_payout": "1.25", "reason": "volume tier"}
    r = apps["admin"].put(url, headers=admin, json=new)
    assert r.status_code == 200, r.text
    assert r.json()["commission_payin"] == "2.5000" and r.json()["changed"] is True
    assert apps["admin"].put(url, headers=admin, json=new).json()["changed"] is False
    rows = db.scalar(select(func.count()).where(TraderCommission.trader_id == trader.id))
    assert rows == 2

    newer = db.get(OrderHistory, process_incoming_order(make_incoming(db, store, ref).id).order_id)
    assert newer.trader_commission_rate == D("2.5")
    db.expire_all()
    assert db.get(OrderHistory, open_order.id).trader_commission_rate == D("3")
    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=open_order.public_id,
        actor=osm.Actor(osm.ActorKind.TRADER, user_id=trader.user_id, trader_id=trader.id),
    )
    db.expire_all()
    assert db.get(OrderHistory, open_order.id).trader_commission == D("0.60000000")  # 3 % of 20

    before = (audit_total(db), rows)
    for bad in (
        {"commission_payin": "100", "commission_payout": "1", "reason": "x"},
        {"commission_payin": "1.23456", "commission_payout": "1", "reason": "x"},
        {"commission_payin": 1.23456, "commission_payout": "1", "reason": "x"},  # not rounded
        {"commission_payin": "-1", "commission_payout": "1", "reason": "x"},
        {"commission_payin": "1", "commission_payout": "1"},
    ):
        is_problem(apps["admin"].put(url, headers=admin, json=bad), 422)
    assert (
        audit_total(db),
        db.scalar(select(func.count()).where(TraderCommission.trader_id == trader.id)),
    ) == before
    is_problem(apps["admin"].put(url, headers=staff(db, Role.ADMIN, "traders:*"), json=new), 403)
    is_problem(
        apps["admin"].put("/admin/traders/987654321/commission", headers=admin, json=new), 404
    )
    # Not on the support server at all.
    support = staff(db, Role.SUPPORT, "*")
    r = apps["support"].put(f"/support/traders/{trader.id}/commission", headers=support, json=new)
    assert r.status_code in (404, 405)
