"""The teamlead API over HTTP on the real database: own team only (a trader outside it is 404),
the grants, the traffic switch (audited, repeat-safe, bad input refused with nothing written),
orders and statistics with exact money, deposits, and the online-requisite statistics on the
teamlead and staff servers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jivapay.database.models import AuditLog, OrderHistory, ReqTrader, Trader
from jivapay.enums import RequisiteStatus, Role
from jivapay.security import create_access_token
from jivapay.servers.exception_handlers import PROBLEM_JSON
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_staff,
    make_store,
    make_trader,
)

D = Decimal


@pytest.fixture
def teamlead_client(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.servers.teamlead.server import app

    return TestClient(app)


def _auth(user_id: int, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_access_token(user_id, role)}"}


@pytest.fixture
def team(db) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("100"))
    lead = make_staff(db, Role.TEAMLEAD)
    other_lead = make_staff(db, Role.TEAMLEAD)
    mine = make_trader(db, ref, team_lead_id=lead.id, first_name="Olga", last_name="Petrova")
    idle = make_trader(db, ref, team_lead_id=lead.id, in_work=False, priority=7)
    foreign = make_trader(db, ref, team_lead_id=other_lead.id, priority=1)
    req = make_requisite(db, mine, ref, number="2200123412349876")
    make_requisite(db, idle, ref)
    make_requisite(db, foreign, ref, number="2200555566667777")
    store = make_store(db, ref, balance=D("1000"))
    return {
        "ref": ref,
        "lead": lead,
        "other_lead": other_lead,
        "mine": mine,
        "idle": idle,
        "foreign": foreign,
        "req": req,
        "store": store,
        "h": _auth(lead.user_id, Role.TEAMLEAD),
    }


def test_traders_list_is_the_own_team_with_filters(teamlead_client, team) -> None:  # type: ignore[no-untyped-def]
    c, h = teamlead_client, team["h"]
    r = c.get("/teamlead/traders", headers=h)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    assert [t["id"] for t in body["items"]] == [team["mine"].id, team["idle"].id]
    first = body["items"][0]
    assert first["online"] is True and first["requisites_online"] == 1
    assert body["items"][1]["online"] is False and body["items"][1]["in_work"] is False

    r = c.get("/teamlead/traders?in_work=false", headers=h)
    assert [t["id"] for t in r.json()["items"]] == [team["idle"].id]
    r = c.get("/teamlead/traders?search=petrov", headers=h)
    assert [t["id"] for t in r.json()["items"]] == [team["mine"].id]
    r = c.get("/teamlead/traders?search=%25", headers=h)
    assert r.json()["total"] == 0
    r = c.get("/teamlead/traders?traffic_enabled=maybe", headers=h)
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM_JSON)
    assert c.get("/teamlead/traders?limit=500", headers=h).status_code == 422


def test_trader_detail_masks_numbers_and_foreign_trader_is_404(teamlead_client, team) -> None:  # type: ignore[no-untyped-def]
    c, h = teamlead_client, team["h"]
    r = c.get(f"/teamlead/traders/{team['mine'].id}", headers=h)
    assert r.status_code == 200
    detail = r.json()
    assert detail["requisites"][0]["number_masked"] == "**** 9876"
    assert detail["requisites"][0]["online_pay_in"] is True
    assert "2200123412349876" not in r.text
    for trader_id in (team["foreign"].id, 999_999_999):
        r = c.get(f"/teamlead/traders/{trader_id}", headers=h)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert "2200555566667777" not in r.text
        r = c.get(f"/teamlead/traders/{trader_id}/stats", headers=h)
        assert r.status_code == 404


def _audit_count(db) -> int:  # type: ignore[no-untyped-def]
    return db.scalar(select(func.count()).select_from(AuditLog)) or 0


def test_traffic_switch_audited_repeat_safe_and_bad_input_writes_nothing(  # type: ignore[no-untyped-def]
    teamlead_client, db, team
) -> None:
    c, h, mine = teamlead_client, team["h"], team["mine"]
    url = f"/teamlead/traders/{mine.id}/traffic"
    before = _audit_count(db)
    for bad in (
        {"enabled": "no"},
        {"enabled": 0},
        {"enabled": False, "in_work": True},
        {},
        [],
    ):
        r = c.post(url, headers=h, json=bad)
        assert r.status_code == 422, bad
        assert r.headers["content-type"].startswith(PROBLEM_JSON)
    r = c.post(url, headers=h, content=b"{not json", params={})
    assert r.status_code == 422
    db.expire_all()
    assert db.get(Trader, mine.id).is_traffic_enabled_by_teamlead is True
    assert _audit_count(db) == before

    r = c.post(url, headers=h, json={"enabled": False})
    assert r.status_code == 200
    assert r.json() == {
        "trader_id": mine.id,
        "is_traffic_enabled_by_teamlead": False,
        "in_work": True,
        "changed": True,
    }
    r = c.post(url, headers=h, json={"enabled": False})
    assert r.json()["changed"] is False
    rows = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "trader.traffic_changed", AuditLog.target_id == str(mine.id)
        )
    ).all()
    assert len(rows) == 1
    assert rows[0].user_id == team["lead"].user_id and rows[0].ip_address
    assert rows[0].details["is_traffic_enabled_by_teamlead"] == {"old": True, "new": False}

    r = c.post(
        f"/teamlead/traders/{team['foreign'].id}/traffic", headers=h, json={"enabled": False}
    )
    assert r.status_code == 404
    db.expire_all()
    assert db.get(Trader, team["foreign"].id).is_traffic_enabled_by_teamlead is True


def test_traffic_switch_stops_and_restarts_assignment_and_work_switch_cannot_override(  # type: ignore[no-untyped-def]
    teamlead_client, db, team
) -> None:
    from jivapay.api_routers.common.trader_orders import router as trader_router
    from jivapay.servers.app_factory import build_app

    trader_client = TestClient(build_app(Role.TRADER, routers=[trader_router]))
    ref, store, mine = team["ref"], team["store"], team["mine"]
    # Only `mine` serves this fiat: the other two traders are switched off for the test.
    db.get(Trader, team["foreign"].id).in_work = False
    db.flush()
    c, h = teamlead_client, team["h"]

    first = process_incoming_order(make_incoming(db, store, ref).id)
    assert first.outcome == "assigned"

    assert c.post(
        f"/teamlead/traders/{mine.id}/traffic", headers=h, json={"enabled": False}
    ).json()["changed"]
    stopped = process_incoming_order(make_incoming(db, store, ref).id)
    assert stopped.outcome == "retrying"

    # The trader switching work off and on again does not bring the traffic back.
    th = _auth(mine.user_id, Role.TRADER)
    assert (
        trader_client.post("/trader/work", headers=th, json={"in_work": False}).status_code == 200
    )
    assert trader_client.post("/trader/work", headers=th, json={"in_work": True}).status_code == 200
    still = process_incoming_order(make_incoming(db, store, ref).id)
    assert still.outcome == "retrying"

    assert c.post(f"/teamlead/traders/{mine.id}/traffic", headers=h, json={"enabled": True}).json()[
        "changed"
    ]
    again = process_incoming_order(make_incoming(db, store, ref).id)
    assert again.outcome == "assigned"
    assert db.get(OrderHistory, again.order_id).trader_id == mine.id

    # And the trader's own switch off still stops it, whatever the teamlead's says.
    trader_client.post("/trader/work", headers=th, json={"in_work": False})
    assert process_incoming_order(make_incoming(db, store, ref).id).outcome == "retrying"


def test_orders_statistics_and_balances_show_exact_team_money(teamlead_client, db, team) -> None:  # type: ignore[no-untyped-def]
    c, h, ref, store, mine = (
        teamlead_client,
        team["h"],
        team["ref"],
        team["store"],
        team["mine"],
    )
    foreign_trader = db.get(Trader, team["foreign"].id)
    foreign_trader.in_work = False
    db.flush()
    done = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("1000.00")).id)
    open_ = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("250.00")).id)
    order = db.get(OrderHistory, done.order_id)
    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=order.public_id,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=mine.id),
    )
    # A foreign team's order never shows.
    db.get(Trader, mine.id).in_work = False
    foreign_trader.in_work = True
    db.flush()
    foreign = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("300.00")).id)
    assert db.get(OrderHistory, foreign.order_id).trader_id == team["foreign"].id

    r = c.get("/teamlead/orders", headers=h)
    assert r.status_code == 200 and r.json()["total"] == 2
    ids = {o["order_id"] for o in r.json()["items"]}
    assert ids == {order.public_id, db.get(OrderHistory, open_.order_id).public_id}
    assert c.get("/teamlead/orders?status=completed", headers=h).json()["total"] == 1
    assert c.get("/teamlead/orders?status=bogus", headers=h).status_code == 422
    bad_dates = "created_from=2026-02-01T00:00:00Z&created_to=2026-01-01T00:00:00Z"
    assert c.get(f"/teamlead/orders?{bad_dates}", headers=h).status_code == 422

    r = c.get("/teamlead/orders/statistics", headers=h)
    assert r.status_code == 200
    stats = r.json()
    totals = stats["totals"]
    assert totals["orders_total"] == 2
    assert totals["by_status"]["completed"] == 1 and totals["by_status"]["pending"] == 1
    assert totals["conversion"] == "0.5000"
    # C = 1000 / 100 = 10 USDT; trader 3% = 0.3
    assert totals["completed"] == [
        {
            "order_type": "payin",
            "fiat_currency": ref.fiat.code,
            "crypto_currency": ref.crypto.code,
            "count": 1,
            "amount_fiat": "1000.00",
            "amount_crypto": "10.00000000",
            "trader_commission": "0.30000000",
        }
    ]
    per = {t["trader_id"]: t["stats"] for t in stats["traders"]}
    assert set(per) == {mine.id, team["idle"].id}
    assert per[mine.id]["orders_total"] == 2 and per[team["idle"].id]["orders_total"] == 0

    r = c.get(f"/teamlead/traders/{mine.id}/stats", headers=h)
    assert r.json()["stats"]["completed"][0]["amount_fiat"] == "1000.00"

    summary = c.get("/teamlead/statistics", headers=h).json()
    assert summary["traders_total"] == 2 and summary["traders_in_work"] == 0
    assert summary["traders_online"] == 0 and summary["requisites_online"] == 0
    assert summary["today"]["orders_total"] == 2 and summary["period"]["orders_total"] == 2

    r = c.get("/teamlead/balances", headers=h)
    assert r.status_code == 200
    balances = r.json()
    by_trader = {row["trader_id"]: row for row in balances["items"]}
    assert set(by_trader) == {mine.id, team["idle"].id}
    # 10000 deposit - 9.7 paid for the completed order; 250/100 * 0.97 = 2.425 frozen for the open one
    assert by_trader[mine.id]["balance"] == "9990.30000000"
    assert by_trader[mine.id]["frozen"] == "2.42500000"
    assert by_trader[mine.id]["available"] == "9987.87500000"
    assert balances["totals"] == [
        {
            "crypto_currency": ref.crypto.code,
            "balance": "19990.30000000",
            "frozen": "2.42500000",
            "available": "19987.87500000",
        }
    ]


@pytest.mark.parametrize(
    "query",
    [
        "date_from=2026-02-01T00:00:00Z&date_to=2026-01-01T00:00:00Z",
        "date_from=2024-01-01T00:00:00Z&date_to=2026-01-01T00:00:00Z",
        "date_from=yesterday",
    ],
)
def test_statistics_refuse_bad_periods(teamlead_client, team, query) -> None:  # type: ignore[no-untyped-def]
    for path in ("/teamlead/statistics", "/teamlead/orders/statistics"):
        r = teamlead_client.get(f"{path}?{query}", headers=team["h"])
        assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM_JSON)


def test_grants_decide_each_route(teamlead_client, db, team) -> None:  # type: ignore[no-untyped-def]
    c = teamlead_client
    bare = make_staff(db, Role.TEAMLEAD, permissions=[])
    db.get(Trader, team["idle"].id).team_lead_id = bare.id
    db.flush()
    h = _auth(bare.user_id, Role.TEAMLEAD)
    idle = team["idle"].id
    for method, path in (
        ("GET", "/teamlead/traders"),
        ("GET", f"/teamlead/traders/{idle}"),
        ("GET", f"/teamlead/traders/{idle}/stats"),
        ("GET", "/teamlead/orders"),
        ("GET", "/teamlead/orders/statistics"),
        ("GET", "/teamlead/statistics"),
        ("GET", "/teamlead/balances"),
        ("GET", "/teamlead/requisites/online-stats"),
    ):
        r = c.request(method, path, headers=h)
        assert r.status_code == 403, path
    r = c.post(f"/teamlead/traders/{idle}/traffic", headers=h, json={"enabled": False})
    assert r.status_code == 403
    db.expire_all()
    assert db.get(Trader, idle).is_traffic_enabled_by_teamlead is True


def test_order_figures_need_the_order_grant(teamlead_client, db, team) -> None:  # type: ignore[no-untyped-def]
    # A teamlead who may see the traders but not their orders gets no order figures through the
    # trader routes either (`/orders/statistics` refuses them the same figures).
    c = teamlead_client
    lead = make_staff(db, Role.TEAMLEAD, permissions=["traders:view:team"])
    db.get(Trader, team["idle"].id).team_lead_id = lead.id
    db.flush()
    h = _auth(lead.user_id, Role.TEAMLEAD)
    idle = team["idle"].id
    assert c.get(f"/teamlead/traders/{idle}/stats", headers=h).status_code == 403
    summary = c.get("/teamlead/statistics", headers=h)
    assert summary.status_code == 200, summary.text
    assert summary.json()["traders_total"] == 1
    assert (summary.json()["today"], summary.json()["period"]) == (None, None)
    full = make_staff(db, Role.TEAMLEAD, permissions=["traders:view:team", "orders:view:team"])
    db.get(Trader, idle).team_lead_id = full.id
    db.flush()
    h = _auth(full.user_id, Role.TEAMLEAD)
    assert c.get(f"/teamlead/traders/{idle}/stats", headers=h).status_code == 200
    summary = c.get("/teamlead/statistics", headers=h).json()
    assert summary["today"] is not None and summary["period"] is not None


def test_orders_visible_to_needs_the_team_grant(db, team) -> None:  # type: ignore[no-untyped-def]
    from jivapay.security import Principal
    from jivapay.utils.query_filters import orders_visible_to

    ref, store = team["ref"], team["store"]
    db.get(Trader, team["foreign"].id).in_work = False
    db.flush()
    res = process_incoming_order(make_incoming(db, store, ref).id)
    assert db.get(OrderHistory, res.order_id).trader_id == team["mine"].id
    lead = team["lead"]
    with_grant = Principal(
        lead.user_id, Role.TEAMLEAD, "t@x", lead.id, permissions=("orders:view:team",)
    )
    without = Principal(lead.user_id, Role.TEAMLEAD, "t@x", lead.id, permissions=())

    def count(principal: Principal) -> int:
        q = select(func.count()).select_from(OrderHistory).where(orders_visible_to(principal))
        return db.scalar(q) or 0

    assert count(with_grant) == 1 and count(without) == 0


def test_online_stats_team_scope_filters_sort_and_staff_servers(  # type: ignore[no-untyped-def]
    teamlead_client, db, team
) -> None:
    from jivapay.servers.admin.server import app as admin_app
    from jivapay.servers.support.server import app as support_app

    ref, mine = team["ref"], team["mine"]
    second = make_requisite(db, mine, ref, upper=D("5000"), pay_in=False)
    make_requisite(db, mine, ref, status=RequisiteStatus.PENDING_REVIEW)
    c, h = teamlead_client, team["h"]
    r = c.get("/teamlead/requisites/online-stats", headers=h)
    assert r.status_code == 200
    body = r.json()
    # `idle` is not in work and `foreign` is another team's: only mine's two approved ones.
    assert [i["requisite_id"] for i in body["items"]] == [team["req"].id, second.id]
    assert body["summary"] == {"requisites": 2, "traders": 1, "pay_in": 1, "pay_out": 2}
    assert body["items"][0]["number_masked"] == "**** 9876" and "2200123412349876" not in r.text
    assert body["items"][0]["turnover_today"] == "0"

    r = c.get("/teamlead/requisites/online-stats?direction=payin", headers=h)
    assert [i["requisite_id"] for i in r.json()["items"]] == [team["req"].id]
    r = c.get("/teamlead/requisites/online-stats?sort=limits", headers=h)
    assert [i["requisite_id"] for i in r.json()["items"]] == [second.id, team["req"].id]
    r = c.get("/teamlead/requisites/online-stats?sort=-limits", headers=h)
    assert [i["requisite_id"] for i in r.json()["items"]] == [team["req"].id, second.id]
    r = c.get(f"/teamlead/requisites/online-stats?method={ref.method.code}", headers=h)
    assert r.json()["total"] == 2
    r = c.get(f"/teamlead/requisites/online-stats?trader_id={team['foreign'].id}", headers=h)
    assert r.json()["total"] == 0
    for bad in ("sort=bogus", "direction=sideways", "method=no_such_method", "bank=nope"):
        r = c.get(f"/teamlead/requisites/online-stats?{bad}", headers=h)
        assert r.status_code == 422, bad

    admin = make_staff(db, Role.ADMIN)
    r = TestClient(admin_app).get(
        f"/admin/requisites/online-stats?fiat={ref.fiat.code}",
        headers=_auth(admin.user_id, Role.ADMIN),
    )
    assert r.status_code == 200
    assert {i["trader_id"] for i in r.json()["items"]} == {mine.id, team["foreign"].id}
    support = make_staff(db, Role.SUPPORT)
    r = TestClient(support_app).get(
        f"/support/requisites/online-stats?fiat={ref.fiat.code}",
        headers=_auth(support.user_id, Role.SUPPORT),
    )
    assert r.status_code == 200 and r.json()["summary"]["requisites"] == 3
    limited = make_staff(db, Role.SUPPORT, permissions=["orders:view:all"])
    r = TestClient(support_app).get(
        "/support/requisites/online-stats", headers=_auth(limited.user_id, Role.SUPPORT)
    )
    assert r.status_code == 403
    # An excluded requisite is not online anywhere.
    db.get(ReqTrader, team["req"].id).is_excluded_from_distribution = True
    db.flush()
    r = c.get("/teamlead/requisites/online-stats", headers=h)
    assert [i["requisite_id"] for i in r.json()["items"]] == [second.id]
