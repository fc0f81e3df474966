"""The order statistics rollup (`order_stats_store`, `order_stats_trader`) on the real PostgreSQL:
after any sequence of creations and transitions it equals a from-scratch aggregation of
`order_history` written here in Python; the statistics answers read through it equal the answers
read from the orders alone; parallel transitions on orders of one store and day lose no increment;
`reconcile` reports a rollup that drifted; a period splits into partial days, whole days and whole
months that cover it exactly."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from jivapay.database.models import OrderHistory, OrderStatsStore, OrderStatsTrader
from jivapay.database.utils import atomic_transaction
from jivapay.enums import ActorKind, OrderEvent, OrderStatus, OrderType, Role
from jivapay.security import Principal
from jivapay.services import (
    merchant_statistics,
    order_stats_rollup,
    team_statistics,
    trader_statistics,
)
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.utils.exceptions import InvalidStatusTransition
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

D = Decimal
# Mid-morning UTC, so "day - n" lands on many days and two months apart.
BASE = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)
Key = tuple[Any, ...]

# --------------------------------------------------------------------------- reference aggregation

_STORE_KEY = ("merchant_id", "grain", "period_start", "store_id")
_TRADER_KEY = ("trader_id", "grain", "period_start")
_COMMON = ("order_type", "status", "fiat_currency_id", "crypto_currency_id")


def _periods(created: datetime) -> list[tuple[str, date]]:
    day = created.astimezone(UTC).date()
    return [("day", day), ("month", day.replace(day=1))]


def _measures(o: OrderHistory) -> tuple[Decimal, ...]:
    seconds = (
        D(0)
        if o.completed_at is None
        # Whole microseconds, as PostgreSQL's EXTRACT(epoch FROM interval) gives them.
        else D((o.completed_at - o.created_at) // timedelta(microseconds=1)) / D(1_000_000)
    )
    return (
        D(1),
        D(1 if o.disputed_at is not None else 0),
        o.amount_fiat,
        o.amount_crypto,
        o.store_commission,
        o.trader_commission,
        o.platform_profit,
        seconds,
    )


def reference_rollup(session: Session) -> dict[str, dict[Key, tuple[Decimal, ...]]]:
    """Both rollup tables computed from scratch in Python over every order row."""
    out: dict[str, dict[Key, list[Decimal]]] = {
        "order_stats_store": defaultdict(lambda: [D(0)] * 8),
        "order_stats_trader": defaultdict(lambda: [D(0)] * 8),
    }
    session.expire_all()
    for o in session.scalars(select(OrderHistory)):
        common = (o.order_type, o.status, o.fiat_currency_id, o.crypto_currency_id)
        for grain, start in _periods(o.created_at):
            for table, key in (
                ("order_stats_store", (o.merchant_id, grain, start, o.store_id, *common)),
                ("order_stats_trader", (o.trader_id, grain, start, *common)),
            ):
                acc = out[table][key]
                for i, value in enumerate(_measures(o)):
                    acc[i] += value
    return {t: {k: tuple(v) for k, v in rows.items()} for t, rows in out.items()}


def stored_rollup(session: Session) -> dict[str, dict[Key, tuple[Decimal, ...]]]:
    """Both rollup tables as stored, rows that add up to nothing left out."""
    order_stats_rollup.settle(session)
    out: dict[str, dict[Key, tuple[Decimal, ...]]] = {}
    for model, keys in ((OrderStatsStore, _STORE_KEY), (OrderStatsTrader, _TRADER_KEY)):
        rows: dict[Key, tuple[Decimal, ...]] = {}
        for r in session.scalars(select(model)).all():
            values = tuple(D(getattr(r, m)) for m in order_stats_rollup.MEASURES)
            if any(values):
                rows[tuple(getattr(r, k) for k in (*keys, *_COMMON))] = values
        out[model.__tablename__] = rows
    return out


# --------------------------------------------------------------------------- a small world


def _world(session: Session) -> dict[str, Any]:
    ref = make_reference(session, rate=D("100"))
    store = make_store(session, ref, balance=D("1000000"))
    trader = make_trader(session, ref, deposit=D("1000000"))
    make_requisite(session, trader, ref)
    return {"ref": ref, "store": store, "trader": trader, "orders": []}


def _create(session: Session, w: dict[str, Any], days_ago: int, minute: int, payout: bool) -> None:
    at = BASE - timedelta(days=days_ago, minutes=minute)
    kind = OrderType.PAYOUT if payout else OrderType.PAYIN
    amount = D(100 + 37 * (days_ago + minute)).quantize(D("0.01"))
    incoming = make_incoming(
        session, w["store"], w["ref"], amount_fiat=amount, order_type=kind, created_at=at
    )
    result = process_incoming_order(incoming.id, now=at)
    assert result.order_id is not None, result
    w["orders"].append(session.get(OrderHistory, result.order_id).public_id)


_EVENTS = [
    OrderEvent.PAYER_CONFIRM,
    OrderEvent.CONFIRM,
    OrderEvent.CANCEL,
    OrderEvent.EXPIRE,
    OrderEvent.DISPUTE,
    OrderEvent.RESOLVE_COMPLETE,
    OrderEvent.RESOLVE_CANCEL,
]
_ADMIN = osm.Actor(ActorKind.ADMIN, user_id=None, permissions=("superuser",))


def _move(session: Session, w: dict[str, Any], index: int, event: OrderEvent, secs: int) -> None:
    if not w["orders"]:
        return
    public_id = w["orders"][index % len(w["orders"])]
    order = session.scalars(select(OrderHistory).filter_by(public_id=public_id)).one()
    trader = osm.Actor(ActorKind.TRADER, user_id=w["trader"].user_id, trader_id=w["trader"].id)
    actor = {
        OrderEvent.PAYER_CONFIRM: osm.PAYER,
        OrderEvent.EXPIRE: osm.SYSTEM,
        OrderEvent.RESOLVE_COMPLETE: _ADMIN,
        OrderEvent.RESOLVE_CANCEL: _ADMIN,
    }.get(event, trader)
    # Late enough for any deadline (expiry), a different number of seconds for each move; the
    # payer's confirmation only before the payment deadline, which refuses it once passed.
    now = order.expires_at + timedelta(seconds=secs, microseconds=secs * 7)
    if event == OrderEvent.PAYER_CONFIRM:
        in_time = order.created_at + timedelta(seconds=secs, microseconds=secs * 7)
        now = min(in_time, order.expires_at - timedelta(microseconds=1))
    osm.transition(session, public_id=public_id, event=event, actor=actor, reason="test", now=now)


step = st.one_of(
    st.tuples(
        st.just("create"),
        st.integers(0, 70),
        st.integers(0, 600),
        st.booleans(),
    ),
    st.tuples(
        st.just("move"),
        st.integers(0, 50),
        st.sampled_from(_EVENTS),
        st.integers(1, 5000),
    ),
)


def _answers(session: Session, w: dict[str, Any], start: datetime, end: datetime) -> list[Any]:
    merchant = Principal(0, Role.MERCHANT, "m@test", w["store"].merchant.id)
    admin = Principal(0, Role.ADMIN, "a@test", 0, ("superuser",))
    trader_id = w["trader"].id
    return [
        merchant_statistics.merchant_statistics(
            session, principal=merchant, date_from=start, date_to=end
        ).model_dump(),
        team_statistics.trader_stats(
            session,
            principal=admin,
            trader_id=trader_id,
            period=team_statistics.Period(start, end),
        ).model_dump(),
        trader_statistics.order_statistics(
            session, date_from=start, date_to=end, trader_id=trader_id
        ).model_dump(),
        trader_statistics.order_statistics(session, date_from=start, date_to=end).model_dump(),
    ]


def _orders_only(start: datetime, end: datetime) -> order_stats_rollup.Split:
    return order_stats_rollup.Split(direct=[(start, end)])


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(step, min_size=1, max_size=14))
def test_rollup_equals_a_fresh_aggregation_and_answers_do_not_change(db, sequence) -> None:  # type: ignore[no-untyped-def]
    example = db.begin_nested()
    try:
        w = _world(db)
        for item in sequence:
            savepoint = db.begin_nested()
            try:
                if item[0] == "create":
                    _create(db, w, item[1], item[2], item[3])
                else:
                    _move(db, w, item[1], item[2], item[3])
                savepoint.commit()
            except InvalidStatusTransition:
                savepoint.rollback()
        assert stored_rollup(db) == reference_rollup(db)
        # Partial days at both ends, whole days around two month boundaries, whole months.
        for start, end in (
            (BASE - timedelta(days=75, hours=3), BASE + timedelta(days=1, hours=2)),
            (BASE - timedelta(days=20, minutes=7), BASE - timedelta(days=2, hours=5)),
            (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        ):
            through_rollup = _answers(db, w, start, end)
            assert order_stats_rollup.split_period(start, end).uses_rollup
            with mock.patch.object(order_stats_rollup, "split_period", _orders_only):
                assert _answers(db, w, start, end) == through_rollup
        assert reconcile(db) == []
    finally:
        example.rollback()


def test_statistics_over_whole_days_count_every_order(db) -> None:  # type: ignore[no-untyped-def]
    """The rollup path is exercised by a known case: 3 orders on two past days, one completed,
    one canceled after a dispute, one still pending."""
    w = _world(db)
    _create(db, w, 10, 0, False)
    _create(db, w, 10, 30, False)
    _create(db, w, 40, 0, False)
    _move(db, w, 0, OrderEvent.CONFIRM, 90)
    _move(db, w, 1, OrderEvent.DISPUTE, 5)
    _move(db, w, 1, OrderEvent.RESOLVE_CANCEL, 9)
    start, end = BASE - timedelta(days=60), BASE - timedelta(days=1)
    assert order_stats_rollup.split_period(start, end).months is not None
    merchant = Principal(0, Role.MERCHANT, "m@test", w["store"].merchant.id)
    body = merchant_statistics.merchant_statistics(
        db, principal=merchant, date_from=start, date_to=end
    )
    payin = next(i for i in body.items if i.order_type == OrderType.PAYIN)
    assert {c.status.value: c.count for c in payin.counts_by_status} == {
        "pending": 1,
        "completed": 1,
        "canceled": 1,
    }
    assert payin.total_orders == 3 and payin.assigned_count == 3
    first = db.scalars(select(OrderHistory).filter_by(public_id=w["orders"][0])).one()
    assert payin.completed_turnover_fiat == first.amount_fiat
    assert payin.average_completion_seconds == round(
        (first.completed_at - first.created_at).total_seconds()
    )
    stats = trader_statistics.order_statistics(
        db, date_from=start, date_to=end, trader_id=w["trader"].id
    )
    (group,) = stats.groups
    assert (group.orders, group.disputes) == (3, 1)
    assert group.by_status[OrderStatus.CANCELED] == 1


def test_reconcile_reports_a_rollup_that_drifted(db) -> None:  # type: ignore[no-untyped-def]
    w = _world(db)
    _create(db, w, 3, 0, False)
    order_stats_rollup.settle(db)
    assert reconcile(db) == []
    db.execute(text("UPDATE order_stats_trader SET orders = orders + 1 WHERE grain = 'day'"))
    found = reconcile(db)
    assert [(d.check, d.expected, d.actual) for d in found] == [
        ("order_stats_trader.orders = aggregation of order_history", D(1), D(2))
    ]
    assert f"trader_id={w['trader'].id}" in found[0].subject


# --------------------------------------------------------------------------- parallel sessions


def _race(factory: sessionmaker[Session], jobs: list[Callable[[Session], Any]]) -> list[Any]:
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        session = factory()
        try:
            barrier.wait()
            results[i] = jobs[i](session)
            session.commit()
        except Exception as exc:  # reported below
            session.rollback()
            results[i] = exc
        finally:
            session.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_parallel_transitions_of_one_store_and_day_lose_no_increment(committed_db) -> None:  # type: ignore[no-untyped-def]
    at = datetime.now(UTC).replace(hour=0, minute=5, second=0, microsecond=0)
    with atomic_transaction() as session:
        w = _world(session)
        make_requisite(session, w["trader"], w["ref"])
        ids = [
            make_incoming(session, w["store"], w["ref"], amount_fiat=D(100 + i)).id
            for i in range(8)
        ]
        trader = osm.Actor(ActorKind.TRADER, user_id=w["trader"].user_id, trader_id=w["trader"].id)
        merchant_id, trader_id = w["store"].merchant.id, w["trader"].id
    public_ids = []
    for i, incoming_id in enumerate(ids):
        result = process_incoming_order(incoming_id, now=at + timedelta(seconds=i))
        assert result.order_id is not None, result
        with committed_db() as session:
            public_ids.append(session.get(OrderHistory, result.order_id).public_id)

    # The moves happen within the orders' payment window (the payer's confirm is refused after it).
    moved_at = at + timedelta(seconds=30)

    def job(public_id: str, event: OrderEvent) -> Callable[[Session], Any]:
        actor = osm.PAYER if event == OrderEvent.PAYER_CONFIRM else trader
        return lambda s: osm.transition(
            s, public_id=public_id, event=event, actor=actor, now=moved_at
        )

    # Paying and disputing lock nothing but their own order: these commit truly in parallel and
    # meet only in the rollup rows of the store's and the trader's day and month.
    events = [OrderEvent.PAYER_CONFIRM] * 4 + [OrderEvent.DISPUTE] * 3 + [OrderEvent.CONFIRM]
    results = _race(committed_db, [job(p, e) for p, e in zip(public_ids, events, strict=True)])
    assert [r.changed for r in results] == [True] * 8, results

    with committed_db() as session:
        assert reconcile(session) == []
        for model, owner in ((OrderStatsStore, merchant_id), (OrderStatsTrader, trader_id)):
            column = model.merchant_id if model is OrderStatsStore else model.trader_id
            for grain in ("day", "month"):
                rows = session.scalars(
                    select(model).where(column == owner, model.grain == grain)
                ).all()
                counts = {r.status: r.orders for r in rows if r.orders}
                assert counts == {"paid": 4, "disputed": 3, "completed": 1}, (model, grain)
                assert sum(r.disputes for r in rows) == 3
                assert sum(r.amount_fiat for r in rows) == D(sum(100 + i for i in range(8)))


# --------------------------------------------------------------------------- the period split


_instants = st.datetimes(
    min_value=datetime(2025, 11, 1), max_value=datetime(2027, 2, 1), timezones=st.just(UTC)
)


@given(a=_instants, b=_instants)
def test_a_period_splits_into_pieces_that_cover_it_exactly(a: datetime, b: datetime) -> None:
    start, end = min(a, b), max(a, b)
    split = order_stats_rollup.split_period(start, end)
    pieces = [(s, e) for s, e in split.direct]

    def midnight(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=UTC)

    pieces += [(midnight(s), midnight(e)) for s, e in split.days]
    for s, e in split.days:
        assert s < e
    if split.months is not None:
        s, e = split.months
        assert s.day == 1 and e.day == 1 and s < e
        pieces.append((midnight(s), midnight(e)))
    pieces.sort()
    assert all(s <= e for s, e in pieces)
    # Contiguous, no overlap, exactly [start, end).
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))
    for s, e in split.direct:
        assert e - s < timedelta(days=1) or not split.uses_rollup


@pytest.mark.parametrize(
    ("start", "end", "direct", "days", "months"),
    [
        # Inside one day: the orders only.
        ("2026-03-03T01:00", "2026-03-03T05:00", 1, [], None),
        # Whole days in one month.
        ("2026-03-03T00:00", "2026-03-10T00:00", 0, [("2026-03-03", "2026-03-10")], None),
        # Partial ends, days around whole months.
        (
            "2026-01-20T12:00",
            "2026-04-02T08:00",
            2,
            [("2026-01-21", "2026-02-01"), ("2026-04-01", "2026-04-02")],
            ("2026-02-01", "2026-04-01"),
        ),
    ],
)
def test_split_examples(start, end, direct, days, months) -> None:  # type: ignore[no-untyped-def]
    def t(value: str) -> datetime:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    split = order_stats_rollup.split_period(t(start), t(end))
    assert len(split.direct) == direct
    assert split.days == [(date.fromisoformat(a), date.fromisoformat(b)) for a, b in days]
    assert split.months == (
        None if months is None else (date.fromisoformat(months[0]), date.fromisoformat(months[1]))
    )
