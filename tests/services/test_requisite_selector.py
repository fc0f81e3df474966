"""The requisite selector: priority, round robin and dynamic limits (the daily one in the trader's
local day, daylight saving time included), the trader's deposit, and its SQL computing the PayIn
hold exactly as `money.payin_hold` does."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.engine import get_engine
from jivapay.database.models import BalanceTraderCryptoHistory, OrderHistory
from jivapay.database.utils import generic_plans_column
from jivapay.enums import IncomingOrderStatus, OnlineStatsSort, OrderType, Role
from jivapay.money import payin_hold
from jivapay.schemas.requisites import MAX_TURNOVER_WINDOW_MINUTES
from jivapay.security import Principal
from jivapay.services import online_stats, order_processor
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.services.requisite_selector import _STATEMENTS, PAYIN_HOLD_SQL, payin_hold_for
from jivapay.services.sweepers import prune_turnover_buckets
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_staff,
    make_store,
    make_trader,
    time_zone,
)
from tests.services.order_world import D
from tests.services.test_trader_day import NEW_YORK, NEW_YORK_MIDNIGHTS

_HOLD_IN_SQL = text(
    "SELECT "
    + PAYIN_HOLD_SQL.replace(":amount_crypto", "CAST(:amount_crypto AS NUMERIC(20, 8))").replace(
        "tc.commission_payin", "CAST(:percent AS NUMERIC(7, 4))"
    )
)

_PLAN_MODE = text("SHOW plan_cache_mode")

amounts = st.decimals(
    min_value=Decimal("0.00000001"), max_value=Decimal("999999999.99999999"), places=8
)
percents = st.decimals(min_value=Decimal(0), max_value=Decimal("99.9999"), places=4)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amount=amounts, percent=percents)
@example(amount=Decimal("0.00000005"), percent=Decimal("10"))  # C*t/100 ends in an exact half
@example(amount=Decimal("0.00000015"), percent=Decimal("10"))
@example(amount=Decimal("999999999.99999999"), percent=Decimal("99.9999"))
def test_the_selector_sql_and_money_agree_on_the_payin_hold(
    db: Session, amount: Decimal, percent: Decimal
) -> None:
    in_sql = db.scalar(_HOLD_IN_SQL, {"amount_crypto": amount, "percent": percent})
    assert in_sql == payin_hold(amount, percent) == payin_hold_for(amount, percent)


def test_selector_honours_priority_round_robin_and_limits(db) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    store = make_store(db, ref, balance=None)
    preferred = make_trader(db, ref, priority=1)
    other = make_trader(db, ref, priority=5)
    p1 = make_requisite(db, preferred, ref, max_concurrent=1)
    p2 = make_requisite(db, preferred, ref, total_limit=D("150"), window_minutes=60)
    o1 = make_requisite(db, other, ref, day_max=D("1000"))
    chosen = []
    for _ in range(4):
        res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("100.00")).id)
        chosen.append(db.get(OrderHistory, res.order_id).requisite_id)
    # p1 (never used) first; p1 is then full (1 open order) -> p2; p2's window 150 is full -> o1.
    assert chosen == [p1.id, p2.id, o1.id, o1.id]
    deposit_history = db.scalar(
        select(func.count())
        .select_from(BalanceTraderCryptoHistory)
        .where(BalanceTraderCryptoHistory.operation == "freeze")
    )
    assert deposit_history == 4
    assert reconcile(db) == []


def test_payin_needs_trader_deposit(db) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    store = make_store(db, ref)
    poor = make_trader(db, ref, deposit=D("5"))
    make_requisite(db, poor, ref)
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("1000.00")).id)
    assert res.outcome == IncomingOrderStatus.RETRYING
    assert "requisite_not_found" in (res.reason or "")


def test_assignment_plans_generically_and_the_setting_ends_with_its_transaction(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = make_reference(db)
    store = make_store(db, ref, balance=None)
    make_requisite(db, make_trader(db, ref), ref)
    seen: list[str] = []
    select_requisite = order_processor.find_suitable_requisite

    def spy(session: Session, **kwargs: Any) -> Any:
        seen.append(session.execute(_PLAN_MODE).scalar_one())
        return select_requisite(session, **kwargs)

    monkeypatch.setattr(order_processor, "find_suitable_requisite", spy)
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("100.00")).id)
    assert res.outcome == IncomingOrderStatus.ASSIGNED
    assert seen == ["force_generic_plan"]

    # On a connection of its own: the setting the claim's column (`generic_plans_column`) makes
    # is the transaction's, never the pooled connection's.
    with get_engine().connect() as conn:
        with Session(bind=conn) as session:
            session.execute(select(generic_plans_column()))
            assert session.execute(_PLAN_MODE).scalar_one() == "force_generic_plan"
            session.commit()
        assert conn.execute(_PLAN_MODE).scalar_one() == "auto"


def test_the_selectors_generic_plan_chooses_what_a_value_specific_plan_does(db: Session) -> None:
    """The same candidates, in the same order, whether PostgreSQL plans the selector for the
    values at hand or once for any values (what a prepared statement under `generic_plans_column`
    does): filters on method and bank, amount limits, the deposit, exclusions."""
    ref = make_reference(db)
    make_store(db, ref, balance=None)
    first = make_trader(db, ref, priority=1, deposit=D("3"))
    second = make_trader(db, ref, priority=5)
    small = make_requisite(db, first, ref, lower=D("10"), upper=D("200"))
    middle = make_requisite(db, first, ref, lower=D("100"), upper=D("5000"))
    make_requisite(db, second, ref, lower=D("50"), upper=D("900"), pay_in=False)
    wide = make_requisite(db, second, ref, lower=D("1"), upper=D("100000"))
    db.flush()
    compiled = _STATEMENTS[OrderType.PAYIN].compile(dialect=db.get_bind().dialect)
    base = {
        "fiat_currency_id": ref.fiat.id,
        "crypto_currency_id": ref.crypto.id,
        "payment_method_id": None,
        "bank_id": None,
        "excluded": [],
    }
    cases = [
        {"amount_fiat": D("150.00"), "amount_crypto": D("1.50")},
        {"amount_fiat": D("150.00"), "amount_crypto": D("1.50"), "excluded": [small.id]},
        {"amount_fiat": D("150.00"), "amount_crypto": D("1.50"), "excluded": [small.id, wide.id]},
        {"amount_fiat": D("700.00"), "amount_crypto": D("7.00")},  # over the first's deposit
        {"amount_fiat": D("0.50"), "amount_crypto": D("0.005")},  # under every lower limit
        {
            "amount_fiat": D("150.00"),
            "amount_crypto": D("1.50"),
            "payment_method_id": ref.method.id,
        },
        {"amount_fiat": D("150.00"), "amount_crypto": D("1.50"), "bank_id": ref.bank.id + 10_000},
    ]
    raw = db.connection().connection.driver_connection
    assert raw is not None
    chosen = []
    with raw.cursor() as cur:
        cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for case in cases:
            params = compiled.construct_params({**base, **case})
            cur.execute(str(compiled), params, prepare=False)
            planned_for_values = cur.fetchall()
            cur.execute(str(compiled), params, prepare=True)
            assert cur.fetchall() == planned_for_values, case
            chosen.append([row[0] for row in planned_for_values])
        cur.execute(
            "SELECT sum(generic_plans), sum(custom_plans) FROM pg_prepared_statements "
            "WHERE statement LIKE '%FROM req_traders r%'"
        )
        generic, custom = cur.fetchone()  # type: ignore[misc]
    assert generic >= len(cases) and custom == 0
    # The cases do reach different answers (a comparison of empty results would prove nothing).
    s, m, w = small.id, middle.id, wide.id
    assert chosen == [[s], [m], [m], [w], [], [s], []]


def _one_requisite(db, **limits):  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    store = make_store(db, ref, balance=None)
    trader = make_trader(db, ref)
    make_requisite(db, trader, ref, **limits)
    return ref, store, trader


def test_a_week_long_window_keeps_counting_after_the_hourly_prune(db) -> None:  # type: ignore[no-untyped-def]
    # The longest window the API accepts: an order completed 3 days ago still counts, also once
    # the prune sweeper has run (it kept two days).
    ref, store, trader = _one_requisite(
        db, total_limit=D("150"), window_minutes=MAX_TURNOVER_WINDOW_MINUTES
    )
    now = utcnow()
    then = now - timedelta(days=3)
    first = process_incoming_order(
        make_incoming(db, store, ref, amount_fiat=D("100.00"), created_at=then).id, now=then
    )
    public_id = db.get(OrderHistory, first.order_id).public_id
    trader_actor = osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id)
    osm.transition(
        db, public_id=public_id, event=osm.OrderEvent.CONFIRM, actor=trader_actor, now=then
    )

    prune_turnover_buckets(now=now)

    second = make_incoming(db, store, ref, amount_fiat=D("100.00"), created_at=now)
    assert process_incoming_order(second.id, now=now).outcome == IncomingOrderStatus.RETRYING
    third = make_incoming(db, store, ref, amount_fiat=D("50.00"), created_at=now)
    assert process_incoming_order(third.id, now=now).outcome == IncomingOrderStatus.ASSIGNED


def test_the_window_never_leaves_out_an_order_inside_it(db) -> None:  # type: ignore[no-untyped-def]
    # 60-minute window, limit 150: an order at hh:mm:59 still counts 59 min 30 s later, although
    # its minute bucket began just over an hour before.
    ref, store, _ = _one_requisite(db, total_limit=D("150"), window_minutes=60)
    first_at = (utcnow() - timedelta(hours=3)).replace(second=59, microsecond=0)
    first = make_incoming(db, store, ref, amount_fiat=D("100.00"), created_at=first_at)
    assert process_incoming_order(first.id, now=first_at).outcome == IncomingOrderStatus.ASSIGNED

    later = first_at + timedelta(minutes=59, seconds=30)
    second = make_incoming(db, store, ref, amount_fiat=D("100.00"), created_at=later)
    assert process_incoming_order(second.id, now=later).outcome == IncomingOrderStatus.RETRYING
    # Two minutes past the hour it has left the window.
    after = first_at + timedelta(minutes=62)
    third = make_incoming(db, store, ref, amount_fiat=D("100.00"), created_at=after)
    assert process_incoming_order(third.id, now=after).outcome == IncomingOrderStatus.ASSIGNED


def _assign(db, store, ref, amount: str, at: datetime):  # type: ignore[no-untyped-def]
    incoming = make_incoming(db, store, ref, amount_fiat=D(amount), created_at=at)
    return process_incoming_order(incoming.id, now=at)


def _online_today(db: Session, requisite_id: int, at: datetime) -> Decimal:
    admin = make_staff(db, Role.ADMIN)
    principal = Principal(admin.user_id, Role.ADMIN, "a@x", admin.id, permissions=("superuser",))
    stats = online_stats.online_requisites(
        db,
        principal=principal,
        filters=online_stats.OnlineFilters(),
        sort=OnlineStatsSort.PRIORITY,
        limit=500,
        offset=0,
        now=at,
    )
    return next(i.turnover_today for i in stats.items if i.requisite_id == requisite_id)


@pytest.mark.parametrize(("before", "day_before", "after", "day_after"), NEW_YORK_MIDNIGHTS)
def test_the_daily_limit_turns_at_the_traders_local_midnight_all_year(  # type: ignore[no-untyped-def]
    db, before: datetime, day_before: date, after: datetime, day_after: date
) -> None:
    # A New York trader, 150 a day: 100 at 23:30 local and 70 at 00:30 local are two days, in
    # summer (EDT) as in winter (EST); the selector's check and the online statistics agree.
    ref = make_reference(db)
    store = make_store(db, ref, balance=None)
    zone = time_zone(db, NEW_YORK, -300)
    trader = make_trader(db, ref, time_zone_id=zone.id)
    req = make_requisite(db, trader, ref, day_max=D("150"))

    first = _assign(db, store, ref, "100.00", before)
    assert first.outcome == IncomingOrderStatus.ASSIGNED
    assert db.get(OrderHistory, first.order_id).turnover_day == day_before
    # The same local day is full.
    late = before + timedelta(minutes=15)
    assert _assign(db, store, ref, "70.00", late).outcome == IncomingOrderStatus.RETRYING
    assert _online_today(db, req.id, late) == D("100.00")
    # Local midnight has passed: a new day.
    assert _online_today(db, req.id, after) == 0
    second = _assign(db, store, ref, "70.00", after)
    assert second.outcome == IncomingOrderStatus.ASSIGNED
    assert db.get(OrderHistory, second.order_id).turnover_day == day_after
    assert _online_today(db, req.id, after) == D("70.00")
    assert _assign(db, store, ref, "100.00", after).outcome == IncomingOrderStatus.RETRYING
