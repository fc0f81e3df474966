"""Trader requisites over HTTP: registration (validated, encrypted, masked, one trader per number),
own-only access, settings, archive, live usage next to the limits, and bad input writing nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jivapay.database.models import (
    AuditLog,
    AvailableBankMethod,
    FullRequisitesSettings,
    OrderHistory,
    OwnerOfRequisites,
    PaymentMethod,
    ReqTrader,
    Trader,
    User,
)
from jivapay.database.types import fingerprint
from jivapay.enums import RequisiteStatus, Role
from jivapay.security import create_access_token
from jivapay.servers.app_factory import build_app
from jivapay.servers.trader.server import ROUTERS
from jivapay.services import requisite_service
from jivapay.services.order_processor import process_incoming_order
from tests.factories import (
    Ref,
    make_incoming,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
    time_zone,
)
from tests.services.test_trader_day import NEW_YORK, NEW_YORK_MIDNIGHTS

D = Decimal
CARD = "4111111111111111"  # passes Luhn
OTHER_CARD = "5555555555554444"
THIRD_CARD = "4012888888881881"


@pytest.fixture
def client(db) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(build_app(Role.TRADER, routers=ROUTERS))


def auth(trader: Trader) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_access_token(trader.user_id, Role.TRADER)}"}


def card_method(session: Session) -> PaymentMethod:
    """The `card` payment method (numbers checked with Luhn), made if this database lacks it."""
    method = session.scalars(select(PaymentMethod).where(PaymentMethod.code == "card")).first()
    if method is None:
        method = PaymentMethod(code="card", name="Bank card transfer")
        session.add(method)
        session.flush()
    return method


def offer(session: Session, ref: Ref, method: PaymentMethod) -> None:
    session.add(
        AvailableBankMethod(
            fiat_currency_id=ref.fiat.id, bank_id=ref.bank.id, payment_method_id=method.id
        )
    )
    session.flush()


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    card = card_method(db)
    offer(db, ref, card)
    offer(db, ref, ref.method)  # an account-style method (`card_<tag>` is not `card`)
    mine = make_trader(db, ref)
    other = make_trader(db, ref)
    return ref, card, mine, other


def body(ref: Ref, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "fiat_currency": ref.fiat.code,
        "payment_method": "card",
        "bank": ref.bank.code,
        "number": CARD,
        "holder": {"first_name": "Anna", "last_name": "Ivanova"},
        "lower_limit": "100.00",
        "upper_limit": "50000.00",
        "pay_in": True,
        "pay_out": False,
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def counts(session: Session) -> tuple[int, ...]:
    session.expire_all()
    return tuple(
        session.scalar(select(func.count()).select_from(model)) or 0
        for model in (ReqTrader, FullRequisitesSettings, OwnerOfRequisites, AuditLog)
    )


def is_problem(r: Any, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    if code is not None:
        assert r.json()["code"] == code, r.json()


def test_create_is_pending_encrypted_masked_and_audited(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, mine, _ = world
    r = client.post("/trader/requisites", headers=auth(mine), json=body(ref))
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["status"] == "pending_review"
    assert data["number_masked"] == "**** 1111" and CARD not in r.text
    assert data["holder_name"] == "Ivanova Anna"
    assert data["settings"]["lower_limit"] == "100.00"
    assert data["settings"]["upper_limit"] == "50000.00"
    assert data["settings"]["pay_out"] is False
    assert data["usage"] == {
        "turnover_today": "0.00",
        "turnover_window": "0.00",
        "open_orders": 0,
        "last_used_at": None,
    }
    assert data["distribution_weight"] == mine.trafic_priority
    raw = db.execute(
        text("SELECT req_number, req_number_hash FROM req_traders WHERE id = :id"),
        {"id": data["id"]},
    ).one()
    assert CARD not in raw.req_number and raw.req_number_hash == fingerprint(CARD)
    audit = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "requisite.created", AuditLog.target_id == str(data["id"])
        )
    ).one()
    assert audit.user_id == mine.user_id and CARD not in str(audit.details)
    assert audit.details["last4"] == "1111"

    # The same holder again by id, another number; an account-style method takes 10-30 digits.
    r = client.post(
        "/trader/requisites",
        headers=auth(mine),
        json=body(
            ref,
            holder=None,
            owner_id=data["owner_id"],
            payment_method=ref.method.code,
            number="40817810099910004312",
        ),
    )
    assert r.status_code == 201, r.text
    assert r.json()["owner_id"] == data["owner_id"] and r.json()["number_masked"] == "**** 4312"


@pytest.mark.parametrize(
    ("over", "status", "code"),
    [
        ({"number": "4111111111111112"}, 422, "invalid_number"),  # Luhn fails
        ({"number": "4111 1111 1111 1111"}, 422, "invalid_number"),
        ({"number": "411111111111"}, 422, "invalid_number"),  # too short for a card
        ({"number": "0000000000000000"}, 422, "invalid_number"),  # Luhn-valid, no card
        ({"number": "0000000000000"}, 422, "invalid_number"),
        ({"payment_method": "{method}", "number": "123456789"}, 422, "invalid_number"),
        ({"bank": "no_such_bank"}, 422, "unknown_bank"),
        ({"fiat_currency": "ZZZ"}, 422, "unknown_fiat_currency"),
        ({"lower_limit": "600.00", "upper_limit": "500.00"}, 422, "limits_unordered"),
        ({"upper_limit": 500.505}, 422, "validation_failed"),  # three places, not rounded
        ({"upper_limit": "500.001"}, 422, "validation_failed"),
        ({"upper_limit": "-5"}, 422, "validation_failed"),
        ({"total_limit": "1000.00"}, 422, "window_required"),
        ({"max_concurrent_orders": 0}, 422, "validation_failed"),
        ({"unknown_field": 1}, 422, "validation_failed"),
        ({"owner_id": 1}, 422, "validation_failed"),  # both holder and owner_id
        ({"holder": {"first_name": "A", "last_name": " "}}, 422, "validation_failed"),
    ],
)
def test_bad_create_is_problem_and_writes_nothing(  # type: ignore[no-untyped-def]
    client, db, world, over, status, code
) -> None:
    ref, _, mine, _ = world
    over = {
        k: (v.format(method=ref.method.code) if isinstance(v, str) else v) for k, v in over.items()
    }
    before = counts(db)
    r = client.post("/trader/requisites", headers=auth(mine), json=body(ref, **over))
    is_problem(r, status, code)
    assert CARD not in r.text
    assert counts(db) == before


def test_limits_as_json_numbers_are_read_exactly(client, db, world) -> None:  # type: ignore[no-untyped-def]
    """The limits are money: a JSON number is read as written; the non-money numbers keep their
    types (an integer count stays an integer, a switch is a boolean)."""
    ref, _, mine, _ = world
    document = json.dumps(
        body(ref, lower_limit="@lower", upper_limit="@upper", max_concurrent_orders=3)
    )
    document = document.replace('"@lower"', "100.5").replace('"@upper"', "50000.25")
    headers = {**auth(mine), "Content-Type": "application/json"}
    r = client.post("/trader/requisites", headers=headers, content=document)
    assert r.status_code == 201, r.text
    settings = r.json()["settings"]
    assert (settings["lower_limit"], settings["upper_limit"]) == ("100.50", "50000.25")
    assert settings["max_concurrent_orders"] == 3
    url = f"/trader/requisites/{r.json()['id']}/settings"
    r = client.patch(url, headers=headers, content='{"turnover_day_max": 1000.1}')
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["turnover_day_max"] == "1000.10"
    before = counts(db)
    for bad in ('{"upper_limit": 1000.001}', '{"max_concurrent_orders": 2.5}', '{"pay_in": 1.5}'):
        is_problem(client.patch(url, headers=headers, content=bad), 422, "validation_failed")
    assert counts(db) == before


def test_method_not_offered_foreign_owner_and_duplicate(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, mine, other = world
    elsewhere = make_reference(db)
    r = client.post(
        "/trader/requisites", headers=auth(mine), json=body(ref, bank=elsewhere.bank.code)
    )
    is_problem(r, 422, "method_not_available")

    theirs = client.post(
        "/trader/requisites", headers=auth(other), json=body(ref, number=THIRD_CARD)
    ).json()
    before = counts(db)
    r = client.post(
        "/trader/requisites",
        headers=auth(mine),
        json=body(ref, holder=None, owner_id=theirs["owner_id"]),
    )
    is_problem(r, 404, "not_found")
    assert counts(db) == before

    assert client.post("/trader/requisites", headers=auth(mine), json=body(ref)).status_code == 201
    before = counts(db)
    r = client.post("/trader/requisites", headers=auth(mine), json=body(ref))
    is_problem(r, 409, "duplicate")
    assert CARD not in r.text and counts(db) == before


def test_a_number_another_trader_holds_is_refused_without_naming_them(client, db, world) -> None:  # type: ignore[no-untyped-def]
    """One card, one trader: two holders would double its limits and take each other's payers."""
    ref, _, mine, other = world
    theirs = client.post("/trader/requisites", headers=auth(other), json=body(ref)).json()
    holder_email = db.get(User, other.user_id).email
    before = counts(db)
    for number in (CARD, CARD):  # a repeat is refused the same way
        r = client.post(
            "/trader/requisites",
            headers=auth(mine),
            json=body(ref, number=number, holder={"first_name": "Boris", "last_name": "Orlov"}),
        )
        is_problem(r, 409, "duplicate")
        assert r.json()["detail"] == "this number is already registered as a requisite"
        # Nothing but the problem itself: no holder, trader, requisite or number.
        assert set(r.json()) <= {
            "type",
            "title",
            "status",
            "detail",
            "instance",
            "code",
            "request_id",
        }
        assert all(s not in r.text for s in (CARD, CARD[-4:], holder_email, "Ivanova"))
    # Not even the new holder's row is left behind.
    assert counts(db) == before
    assert client.get("/trader/requisites", headers=auth(mine)).json()["total"] == 0

    # Archiving frees the number for anyone.
    r = client.post(f"/trader/requisites/{theirs['id']}/archive", headers=auth(other))
    assert r.json()["status"] == "archived"
    r = client.post("/trader/requisites", headers=auth(mine), json=body(ref))
    assert r.status_code == 201 and r.json()["trader_id"] == mine.id
    # And now the first trader is the one refused.
    is_problem(
        client.post("/trader/requisites", headers=auth(other), json=body(ref)), 409, "duplicate"
    )


def test_own_requisites_only_and_filters(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, mine, other = world
    a = client.post("/trader/requisites", headers=auth(mine), json=body(ref)).json()
    client.post(
        "/trader/requisites",
        headers=auth(mine),
        json=body(ref, number=OTHER_CARD, pay_in=False, pay_out=True),
    )
    theirs = client.post(
        "/trader/requisites", headers=auth(other), json=body(ref, number=THIRD_CARD)
    ).json()

    page = client.get("/trader/requisites", headers=auth(mine)).json()
    assert page["total"] == 2 and page["limit"] == 50 and page["offset"] == 0
    assert {i["trader_id"] for i in page["items"]} == {mine.id}
    assert (
        client.get("/trader/requisites?direction=payout", headers=auth(mine)).json()["total"] == 1
    )
    assert client.get("/trader/requisites?direction=payin", headers=auth(mine)).json()["total"] == 1
    assert client.get("/trader/requisites?status=approved", headers=auth(mine)).json()["total"] == 0
    page = client.get(
        f"/trader/requisites?fiat_currency={ref.fiat.code}&limit=1", headers=auth(mine)
    )
    assert page.json()["total"] == 2 and len(page.json()["items"]) == 1
    is_problem(client.get("/trader/requisites?status=bogus", headers=auth(mine)), 422)
    is_problem(client.get("/trader/requisites?direction=sideways", headers=auth(mine)), 422)
    is_problem(client.get("/trader/requisites?limit=500", headers=auth(mine)), 422)

    assert client.get(f"/trader/requisites/{a['id']}", headers=auth(mine)).status_code == 200
    tid = theirs["id"]
    is_problem(client.get(f"/trader/requisites/{tid}", headers=auth(mine)), 404, "not_found")
    before = counts(db)
    r = client.patch(
        f"/trader/requisites/{tid}/settings", headers=auth(mine), json={"pay_out": True}
    )
    is_problem(r, 404)
    is_problem(client.post(f"/trader/requisites/{tid}/archive", headers=auth(mine)), 404)
    is_problem(client.get("/trader/requisites/99999999999999999999", headers=auth(mine)), 422)
    assert counts(db) == before
    # No token, or a token of another role: refused before any data.
    assert client.get("/trader/requisites").status_code == 401
    store = make_store(db, ref)
    merchant_token = create_access_token(store.merchant.user_id, Role.MERCHANT)
    r = client.get("/trader/requisites", headers={"Authorization": f"Bearer {merchant_token}"})
    assert r.status_code in (401, 403) and "items" not in r.text


def test_settings_update_repeat_clear_and_bad_input(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, mine, _ = world
    rid = client.post("/trader/requisites", headers=auth(mine), json=body(ref)).json()["id"]
    url = f"/trader/requisites/{rid}/settings"
    change = {"pay_out": True, "total_limit": "9000.00", "turnover_limit_minutes": 60}
    r = client.patch(url, headers=auth(mine), json=change)
    assert r.status_code == 200 and r.json()["changed"] is True
    assert r.json()["settings"]["total_limit"] == "9000.00"
    assert client.patch(url, headers=auth(mine), json=change).json()["changed"] is False
    audit = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "requisite.settings_changed", AuditLog.target_id == str(rid)
        )
    ).all()
    assert len(audit) == 1
    assert audit[0].details["changes"]["pay_out"] == {"from": False, "to": True}

    before = counts(db)
    for bad in (
        {"upper_limit": None},
        {"lower_limit": "60000.00"},  # above the upper limit
        {"turnover_limit_minutes": None},  # total_limit would lose its window
        {"is_excluded_from_distribution": True},  # staff only
        {"status": "approved"},
        {"upper_limit": "1e5"},
        {"turnover_limit_minutes": "60"},
    ):
        is_problem(client.patch(url, headers=auth(mine), json=bad), 422)
    assert counts(db) == before

    r = client.patch(
        url, headers=auth(mine), json={"total_limit": None, "turnover_limit_minutes": None}
    )
    assert r.json()["settings"]["total_limit"] is None and r.json()["changed"] is True


def test_archive_is_terminal_and_frees_the_number(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, mine, _ = world
    rid = client.post("/trader/requisites", headers=auth(mine), json=body(ref)).json()["id"]
    r = client.post(f"/trader/requisites/{rid}/archive", headers=auth(mine))
    assert r.status_code == 200 and r.json()["status"] == "archived" and r.json()["changed"]
    assert (
        client.post(f"/trader/requisites/{rid}/archive", headers=auth(mine)).json()["changed"]
        is False
    )
    is_problem(
        client.patch(
            f"/trader/requisites/{rid}/settings", headers=auth(mine), json={"pay_out": True}
        ),
        409,
        "requisite_archived",
    )
    # The archived card may be registered again.
    assert client.post("/trader/requisites", headers=auth(mine), json=body(ref)).status_code == 201


def test_usage_shows_the_engine_counters(client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, mine, _ = world
    created = client.post(
        "/trader/requisites",
        headers=auth(mine),
        json=body(ref, total_limit="100000.00", turnover_limit_minutes=30),
    ).json()
    db.get(ReqTrader, created["id"]).status = RequisiteStatus.APPROVED.value
    db.flush()
    store = make_store(db, ref, balance=D("1000"))
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("750.00")).id)
    assert res.order_id is not None
    usage = client.get(f"/trader/requisites/{created['id']}", headers=auth(mine)).json()["usage"]
    assert usage["turnover_today"] == "750.00" and usage["turnover_window"] == "750.00"
    assert usage["open_orders"] == 1 and usage["last_used_at"] is not None

    # Archiving takes it out of selection; the order already assigned to it still completes.
    r = client.post(f"/trader/requisites/{created['id']}/archive", headers=auth(mine))
    assert r.json()["status"] == "archived" and r.json()["usage"]["open_orders"] == 1
    public_id = db.get(OrderHistory, res.order_id).public_id
    r = client.post(f"/trader/orders/{public_id}/confirm", headers=auth(mine))
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert process_incoming_order(make_incoming(db, store, ref).id).order_id is None


@pytest.mark.parametrize("traders", [1, 2], ids=["one-trader", "two-traders"])
def test_parallel_registrations_of_one_number_leave_one(  # type: ignore[no-untyped-def]
    committed_db, monkeypatch, traders: int
) -> None:
    """Two sessions register the same card at once, for one trader or for two: both pass the
    check before either writes, and the unique index lets exactly one win; the other gets the
    409 of a duplicate, not a database error."""
    import threading

    from jivapay.schemas.requisites import RequisiteCreate
    from jivapay.security import Principal
    from jivapay.services import requisite_service as rs
    from jivapay.utils.exceptions import DuplicateObject

    with committed_db() as session:
        ref = make_reference(session)
        offer(session, ref, card_method(session))
        people = [make_trader(session, ref, deposit=None) for _ in range(traders)]
        session.commit()
        principals = [
            Principal(user_id=t.user_id, role=Role.TRADER, email="t@x", profile_id=t.id)
            for t in people
        ]
        data = RequisiteCreate.model_validate(body(ref))

    checked = threading.Barrier(2, timeout=20)
    real_check = rs.ensure_number_free

    def check_then_wait(*args: Any, **kwargs: Any) -> None:
        real_check(*args, **kwargs)
        checked.wait()  # both saw the number free: only the index can stop the second

    monkeypatch.setattr(rs, "ensure_number_free", check_then_wait)
    outcomes: list[str] = []

    def register(principal: Principal) -> None:
        with committed_db() as session:
            try:
                rs.create_requisite(
                    session, principal=principal, data=data, actor=rs.Actor(principal.user_id)
                )
                session.commit()
                outcomes.append("created")
            except DuplicateObject as exc:
                session.rollback()
                outcomes.append(f"duplicate: {exc.message}")

    threads = [threading.Thread(target=register, args=(principals[i % traders],)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == [
        "created",
        "duplicate: this number is already registered as a requisite",
    ]
    with committed_db() as session:
        held = session.scalars(
            select(ReqTrader.trader_id).where(ReqTrader.req_number_hash == fingerprint(CARD))
        ).all()
        assert len(held) == 1 and held[0] in {t.id for t in people}


def test_openapi_lists_the_real_errors(client) -> None:  # type: ignore[no-untyped-def]
    paths = client.get("/openapi.json").json()["paths"]
    create = paths["/trader/requisites"]["post"]["responses"]
    assert {"201", "401", "403", "404", "409", "422"} <= set(create)
    assert "application/problem+json" in create["409"]["content"]
    assert "404" in paths["/trader/requisites/{requisite_id}/archive"]["post"]["responses"]


@pytest.mark.parametrize(("before", "day_before", "after", "day_after"), NEW_YORK_MIDNIGHTS)
def test_usage_today_is_the_local_day_the_selector_counts_in(  # type: ignore[no-untyped-def]
    client, db, world, monkeypatch, before, day_before, after, day_after
) -> None:
    # A New York trader: the detail and the list show the turnover of the local day the order
    # was counted in, turning at local midnight in summer (EDT) as in winter (EST).
    ref, _, mine, _ = world
    mine.time_zone_id = time_zone(db, NEW_YORK, -300).id
    req = make_requisite(db, mine, ref, day_max=D("150"))
    store = make_store(db, ref, balance=D("1000"))
    clock = [before]
    monkeypatch.setattr(requisite_service, "utcnow", lambda: clock[0])

    def today(at: Any) -> str:
        clock[0] = at
        url = f"/trader/requisites/{req.id}"
        detail = client.get(url, headers=auth(mine)).json()["usage"]["turnover_today"]
        items = client.get("/trader/requisites", headers=auth(mine)).json()["items"]
        assert [i["usage"]["turnover_today"] for i in items if i["id"] == req.id] == [detail]
        return str(detail)

    def assign(amount: str, at: Any) -> Any:
        incoming = make_incoming(db, store, ref, amount_fiat=D(amount), created_at=at)
        return process_incoming_order(incoming.id, now=at).order_id

    first = assign("100.00", before)
    assert db.get(OrderHistory, first).turnover_day == day_before
    assert today(before) == "100.00"
    assert today(after) == "0.00"
    second = assign("70.00", after)
    assert second is not None and db.get(OrderHistory, second).turnover_day == day_after
    assert today(after) == "70.00"
    assert today(before + timedelta(minutes=15)) == "100.00"
