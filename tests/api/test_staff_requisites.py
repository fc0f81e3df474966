"""Requisite moderation on the staff servers: the queue, the status machine, the audited reveal,
settings and exclusion, grants; and a requisite made by a trader over HTTP, approved over HTTP, is
the one the real selector assigns a PayIn to."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    Admin,
    AuditLog,
    FullRequisitesSettings,
    OrderHistory,
    ReqTrader,
    Support,
)
from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.servers.admin.server import ROUTERS as ADMIN_ROUTERS
from jivapay.servers.app_factory import build_app
from jivapay.servers.support.server import ROUTERS as SUPPORT_ROUTERS
from jivapay.servers.trader.server import ROUTERS as TRADER_ROUTERS
from jivapay.services.order_processor import process_incoming_order
from tests.api.test_trader_requisites import CARD, auth, body, card_method, is_problem, offer
from tests.factories import make_incoming, make_reference, make_store, make_trader, make_user

D = Decimal


@pytest.fixture
def apps(db) -> dict[str, TestClient]:  # type: ignore[no-untyped-def]
    return {
        "trader": TestClient(build_app(Role.TRADER, routers=TRADER_ROUTERS)),
        "support": TestClient(build_app(Role.SUPPORT, routers=SUPPORT_ROUTERS)),
        "admin": TestClient(build_app(Role.ADMIN, routers=ADMIN_ROUTERS)),
    }


def staff(session: Session, role: Role, *grants: str) -> dict[str, str]:
    """A bearer header of a new support or admin holding `grants`."""
    user = make_user(session, role)
    model = Support if role == Role.SUPPORT else Admin
    session.add(model(user_id=user.id, granted_permissions=list(grants)))
    session.flush()
    return {"Authorization": f"Bearer {create_access_token(user.id, role)}"}


MODERATOR = ("requisites:view:all", "requisites:moderate:all", "requisites:edit:all")


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    offer(db, ref, card_method(db))
    trader = make_trader(db, ref)
    return ref, trader


def new_requisite(
    apps: dict[str, TestClient], ref: Any, trader: Any, **over: Any
) -> dict[str, Any]:
    r = apps["trader"].post("/trader/requisites", headers=auth(trader), json=body(ref, **over))
    assert r.status_code == 201, r.text
    return r.json()


def audit_count(session: Session, action: str) -> int:
    return session.scalar(select(func.count()).where(AuditLog.action == action)) or 0


def test_api_made_requisite_approved_over_http_is_picked_by_the_selector(  # type: ignore[no-untyped-def]
    apps, db, world
) -> None:
    ref, trader = world
    store = make_store(db, ref, balance=D("1000"))
    rid = new_requisite(apps, ref, trader)["id"]
    # Pending review: the selector does not see it.
    assert process_incoming_order(make_incoming(db, store, ref).id).order_id is None

    sup = staff(db, Role.SUPPORT, *MODERATOR)
    queue = apps["support"].get("/support/requisites?status=pending_review", headers=sup).json()
    assert rid in [i["id"] for i in queue["items"]]
    assert all(i["number"] is None for i in queue["items"]) and CARD not in str(queue)
    r = apps["support"].post(
        f"/support/requisites/{rid}/status",
        headers=sup,
        json={"status": "approved", "reason": "documents checked"},
    )
    assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["changed"]

    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("500.00")).id)
    order = db.get(OrderHistory, res.order_id)
    assert order is not None and order.requisite_id == rid and order.trader_id == trader.id


@pytest.mark.parametrize(
    ("path", "target", "outcome"),
    [
        ((), "approved", 200),
        ((), "blocked", 200),
        ((), "archived", 200),
        ((), "pending_review", "repeat"),
        (("approved",), "blocked", 200),
        (("approved",), "pending_review", 409),
        (("blocked",), "approved", 200),
        (("blocked",), "pending_review", 409),
        (("archived",), "approved", 409),
        (("archived",), "blocked", 409),
        (("archived",), "archived", "repeat"),
        (("approved",), "approved", "repeat"),
    ],
)
def test_status_machine(apps, db, world, path, target, outcome) -> None:  # type: ignore[no-untyped-def]
    ref, trader = world
    rid = new_requisite(apps, ref, trader)["id"]
    admin = staff(db, Role.ADMIN, "requisites:*")
    url = f"/admin/requisites/{rid}/status"
    for step in path:
        assert (
            apps["admin"]
            .post(url, headers=admin, json={"status": step, "reason": "x"})
            .json()["changed"]
        )
    before = audit_count(db, "requisite.status_changed")
    r = apps["admin"].post(url, headers=admin, json={"status": target, "reason": "moderation"})
    if outcome == 409:
        is_problem(r, 409, "invalid_status_transition")
        assert audit_count(db, "requisite.status_changed") == before
    elif outcome == "repeat":
        assert r.status_code == 200 and r.json()["changed"] is False
        assert audit_count(db, "requisite.status_changed") == before
    else:
        assert r.status_code == 200 and r.json()["status"] == target and r.json()["changed"]
        row = db.scalars(
            select(AuditLog)
            .where(AuditLog.action == "requisite.status_changed", AuditLog.target_id == str(rid))
            .order_by(AuditLog.id.desc())
        ).first()
        assert row.details["to"] == target and row.details["reason"] == "moderation"
        assert row.ip_address == "testclient" and row.user_id is not None


def test_bad_status_bodies_write_nothing(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, trader = world
    rid = new_requisite(apps, ref, trader)["id"]
    sup = staff(db, Role.SUPPORT, *MODERATOR)
    before = audit_count(db, "requisite.status_changed")
    for bad in (
        {"status": "approved"},  # reason required
        {"status": "approved", "reason": ""},
        {"status": "deleted", "reason": "x"},
        {"status": "approved", "reason": "x", "extra": 1},
    ):
        is_problem(
            apps["support"].post(f"/support/requisites/{rid}/status", headers=sup, json=bad), 422
        )
    is_problem(
        apps["support"].post(
            "/support/requisites/987654321/status",
            headers=sup,
            json={"status": "approved", "reason": "x"},
        ),
        404,
    )
    assert audit_count(db, "requisite.status_changed") == before
    db.expire_all()
    assert db.get(ReqTrader, rid).status == "pending_review"


def test_blocking_lets_the_open_order_finish_and_stops_new_ones(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, trader = world
    store = make_store(db, ref, balance=D("1000"))
    rid = new_requisite(apps, ref, trader)["id"]
    admin = staff(db, Role.ADMIN, *MODERATOR)
    url = f"/admin/requisites/{rid}/status"
    apps["admin"].post(url, headers=admin, json={"status": "approved", "reason": "ok"})
    res = process_incoming_order(make_incoming(db, store, ref).id)
    public_id = db.get(OrderHistory, res.order_id).public_id

    r = apps["admin"].post(url, headers=admin, json={"status": "blocked", "reason": "complaint"})
    assert r.json()["status"] == "blocked" and r.json()["usage"]["open_orders"] == 1
    assert process_incoming_order(make_incoming(db, store, ref).id).order_id is None

    r = apps["trader"].post(f"/trader/orders/{public_id}/confirm", headers=auth(trader))
    assert r.status_code == 200 and r.json()["status"] == "completed"
    view = apps["admin"].get(f"/admin/requisites/{rid}", headers=admin).json()
    assert view["usage"]["open_orders"] == 0 and view["status"] == "blocked"


def test_reveal_needs_the_moderation_grant_and_is_audited(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, trader = world
    rid = new_requisite(apps, ref, trader)["id"]
    viewer = staff(db, Role.SUPPORT, "requisites:view:all")
    moderator = staff(db, Role.SUPPORT, *MODERATOR)
    url = f"/support/requisites/{rid}"

    plain = apps["support"].get(url, headers=viewer)
    assert plain.status_code == 200 and plain.json()["number"] is None and CARD not in plain.text
    assert plain.json()["number_masked"] == "**** 1111"
    before = audit_count(db, "requisite.number_revealed")
    is_problem(apps["support"].get(url + "?reveal=true", headers=viewer), 403, "permission_denied")
    assert audit_count(db, "requisite.number_revealed") == before

    for _ in range(2):
        r = apps["support"].get(url + "?reveal=true", headers=moderator)
        assert r.status_code == 200 and r.json()["number"] == CARD
    assert audit_count(db, "requisite.number_revealed") == before + 2
    row = db.scalars(
        select(AuditLog)
        .where(AuditLog.action == "requisite.number_revealed")
        .order_by(AuditLog.id.desc())
    ).first()
    assert row.target_id == str(rid) and CARD not in str(row.details) and row.user_id is not None


def test_settings_and_exclusion_from_distribution(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, trader = world
    store = make_store(db, ref, balance=D("1000"))
    rid = new_requisite(apps, ref, trader)["id"]
    admin = staff(db, Role.ADMIN, *MODERATOR)
    apps["admin"].post(
        f"/admin/requisites/{rid}/status",
        headers=admin,
        json={"status": "approved", "reason": "ok"},
    )
    url = f"/admin/requisites/{rid}/settings"
    r = apps["admin"].patch(
        url, headers=admin, json={"is_excluded_from_distribution": True, "reason": "checks"}
    )
    assert r.status_code == 200 and r.json()["is_excluded_from_distribution"] is True
    assert r.json()["changed"] is True
    assert (
        apps["admin"]
        .patch(url, headers=admin, json={"is_excluded_from_distribution": True})
        .json()["changed"]
        is False
    )
    assert process_incoming_order(make_incoming(db, store, ref).id).order_id is None
    listed = apps["admin"].get("/admin/requisites?excluded=true", headers=admin).json()
    assert [i["id"] for i in listed["items"]] == [rid]

    r = apps["admin"].patch(
        url, headers=admin, json={"is_excluded_from_distribution": False, "upper_limit": "400.00"}
    )
    assert r.json()["settings"]["upper_limit"] == "400.00"
    assert (
        process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("500.00")).id).order_id
        is None
    )
    assert process_incoming_order(
        make_incoming(db, store, ref, amount_fiat=D("300.00")).id
    ).order_id

    before = db.scalar(select(func.count()).select_from(AuditLog))
    limits = db.scalars(
        select(FullRequisitesSettings).where(FullRequisitesSettings.requisite_id == rid)
    ).one()
    for bad in (
        {"upper_limit": "1.001"},
        {"lower_limit": "500.00"},
        {"bogus": True},
        {"pay_in": "maybe"},
    ):
        is_problem(apps["admin"].patch(url, headers=admin, json=bad), 422)
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(AuditLog)) == before
    assert limits.upper_limit == D("400.00")


def test_grants_decide(apps, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, trader = world
    rid = new_requisite(apps, ref, trader)["id"]
    nothing = staff(db, Role.SUPPORT, "orders:view:all")
    viewer = staff(db, Role.SUPPORT, "requisites:view:all")
    for method, url, payload in (
        ("get", "/support/requisites", None),
        ("get", f"/support/requisites/{rid}", None),
        ("post", f"/support/requisites/{rid}/status", {"status": "approved", "reason": "x"}),
        ("patch", f"/support/requisites/{rid}/settings", {"pay_out": True}),
    ):
        r = apps["support"].request(method, url, headers=nothing, json=payload)
        is_problem(r, 403, "permission_denied")
        assert "items" not in r.text
    for method, url, payload in (
        ("post", f"/support/requisites/{rid}/status", {"status": "approved", "reason": "x"}),
        ("patch", f"/support/requisites/{rid}/settings", {"pay_out": True}),
    ):
        is_problem(apps["support"].request(method, url, headers=viewer, json=payload), 403)
    # A trader's or support's token on the admin server is refused.
    is_problem(apps["admin"].get("/admin/requisites", headers=auth(trader)), 403)
    is_problem(apps["admin"].get("/admin/requisites", headers=viewer), 403)
    # Filters are validated.
    for bad in ("status=bogus", "last4=12a4", "direction=up", "trader_id=0", "limit=0"):
        is_problem(apps["support"].get(f"/support/requisites?{bad}", headers=viewer), 422)
    page = apps["support"].get(
        f"/support/requisites?trader_id={trader.id}&last4=1111", headers=viewer
    )
    assert page.json()["total"] == 1
