"""The trader-local day: the calendar day that a trader's daily limits (`turnover_day_max`, counted
in `requisite_daily_turnover`) count in, and the one definition of it every reader shares (the
selector's limit check, the requisite views, the online statistics).

The day is the date on the wall clock of the trader's IANA time zone (`time_zones.name`) at the
instant in question, so it follows daylight saving time: in New York it turns at 00:00 EDT in
summer and 00:00 EST in winter. `time_zones.utc_offset_minutes` is only the zone's displayed
standard offset; a fixed offset would turn the day at 01:00 local half the year. A trader without
a time zone counts in UTC.

Python (`trader_day`, zoneinfo) and SQL (`trader_day_sql`, PostgreSQL's `timezone(name, ts)`) read
the same IANA database (the system's tzdata on our images); tests/services/test_trader_day.py checks
that they agree for every seeded zone.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from sqlalchemy import Date, cast, func, text
from sqlalchemy.orm import Session

from jivapay.database.base import as_utc

# The zone of a trader who has none.
DEFAULT_ZONE = "UTC"

_KNOWN_TO_POSTGRESQL = text("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = :name)")


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    # ZoneInfo keeps only a few zones alive itself; the selector asks on every assignment, so every
    # zone in use stays loaded here (the table holds a few dozen).
    return ZoneInfo(name)


def trader_day(now: datetime, zone_name: str | None) -> date:
    """The trader-local day at the instant `now` in the IANA zone `zone_name` (None: UTC)."""
    return as_utc(now).astimezone(_zone(zone_name or DEFAULT_ZONE)).date()


def trader_day_sql(now: Any, zone_name: Any) -> Any:
    """`trader_day` as an SQL expression: `now` a timestamptz expression, `zone_name` the
    (nullable) `time_zones.name` column."""
    return cast(func.timezone(func.coalesce(zone_name, DEFAULT_ZONE), now), Date)


def is_known_zone(session: Session, name: str) -> bool:
    """Whether both Python and PostgreSQL know the IANA zone `name`: a zone only one of them knew
    (their tz databases of different releases) would fail the other's day computation."""
    return name in available_timezones() and bool(
        session.scalar(_KNOWN_TO_POSTGRESQL, {"name": name})
    )
