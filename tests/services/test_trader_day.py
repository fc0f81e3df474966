"""The trader-local day (`services.trader_day`): it turns at local midnight of the trader's IANA
zone all year, daylight saving time included, and Python's zoneinfo and PostgreSQL compute the
same wall clock for every seeded zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import DateTime, literal, select, text
from sqlalchemy.orm import Session

from jivapay.seeds.reference import TIME_ZONES
from jivapay.services.trader_day import is_known_zone, trader_day, trader_day_sql

NEW_YORK = "America/New_York"

# (instant, its day in New York): 30 minutes either side of local midnight, in summer (EDT,
# UTC-4) and in winter (EST, UTC-5). A fixed offset of -300 puts 2026-07-01T04:30Z on June 30.
NEW_YORK_MIDNIGHTS = [
    pytest.param(
        datetime(2026, 7, 1, 3, 30, tzinfo=UTC),
        date(2026, 6, 30),
        datetime(2026, 7, 1, 4, 30, tzinfo=UTC),
        date(2026, 7, 1),
        id="summer",
    ),
    pytest.param(
        datetime(2026, 1, 15, 4, 30, tzinfo=UTC),
        date(2026, 1, 14),
        datetime(2026, 1, 15, 5, 30, tzinfo=UTC),
        date(2026, 1, 15),
        id="winter",
    ),
]


def _sql_day(session: Session, now: datetime, zone: str | None) -> date:
    day: date = session.scalar(
        select(trader_day_sql(literal(now, DateTime(timezone=True)), literal(zone)))
    )
    return day


@pytest.mark.parametrize(("before", "day_before", "after", "day_after"), NEW_YORK_MIDNIGHTS)
def test_the_day_turns_at_local_midnight_in_python_and_sql(
    db: Session, before: datetime, day_before: date, after: datetime, day_after: date
) -> None:
    for now, day in ((before, day_before), (after, day_after)):
        assert trader_day(now, NEW_YORK) == day == _sql_day(db, now, NEW_YORK), now


def test_no_zone_is_utc_and_london_keeps_summer_time(db: Session) -> None:
    late = datetime(2026, 7, 1, 23, 30, tzinfo=UTC)  # 00:30 BST on July 2
    for zone, day in ((None, date(2026, 7, 1)), ("UTC", date(2026, 7, 1))):
        assert trader_day(late, zone) == day == _sql_day(db, late, zone)
    assert (
        trader_day(late, "Europe/London") == date(2026, 7, 2) == _sql_day(db, late, "Europe/London")
    )
    # A naive instant is read as UTC, as everywhere else.
    assert trader_day(late.replace(tzinfo=None), "Europe/London") == date(2026, 7, 2)


_PG_WALL_CLOCKS = text(
    "SELECT z, ts, timezone(z, ts) AS wall FROM unnest(CAST(:zones AS text[])) AS z, "
    "generate_series(CAST(:start AS timestamptz), CAST(:stop AS timestamptz), "
    "interval '1 hour') AS ts"
)


def test_python_and_postgresql_agree_on_every_seeded_zone(db: Session) -> None:
    # Every hour of two years: each DST change of every seeded zone falls between two of them, and
    # a zone's offsets differing anywhere shows as a different wall clock.
    zones = [name for name, _ in TIME_ZONES]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = db.execute(
        _PG_WALL_CLOCKS, {"zones": zones, "start": start, "stop": start + timedelta(days=730)}
    ).all()
    assert len(rows) == len(zones) * (730 * 24 + 1)
    differing = [
        (row.z, row.ts, row.wall)
        for row in rows
        if row.ts.astimezone(ZoneInfo(row.z)).replace(tzinfo=None) != row.wall
    ]
    assert differing == []


def test_a_zone_must_be_known_to_python_and_postgresql(db: Session) -> None:
    assert all(is_known_zone(db, name) for name, _ in TIME_ZONES)
    assert not is_known_zone(db, "Mars/Olympus")
