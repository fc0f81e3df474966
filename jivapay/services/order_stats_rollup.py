"""The order statistics rollup: what it holds, how a statistics period is read from it, and how it
is checked and rebuilt.

`order_stats_store` (merchant view: merchant, store) and `order_stats_trader` (trader view) hold,
per UTC day and per UTC month (`grain`), order type, status and currency pair, the count of
orders, of disputed ones, and the sums of fiat, crypto, store and trader commission, platform profit
and seconds from creation to completion. An order counts in the rows of the day and month of its
`created_at`, under its current status.

One writer: the constraint trigger `order_stats_rollup` on `order_history` (migration 0009) adds an
inserted order's share and, on an update of a counted column, takes the old version's share out of
its rows and adds the new one's, with `INSERT ... ON CONFLICT DO UPDATE` increments (no
read-modify-write, so parallel transactions lose nothing). Every order insert and status change
(assignment, pay, confirm, cancel, expire, dispute, resolve; a test factory or a bulk insert too)
updates it in its own transaction without any call site being able to forget it. The trigger is
deferred to commit: the rollup rows are the last rows a transaction locks and are held only while it
commits, outside the lock order of docs/architecture.md.

Reading: `split_period` cuts a half-open period into the partial UTC days at its ends (read from
`order_history` by the statistics' own indexed queries), whole days and whole months (read from the
rollup). The answer is the same as a scan of the whole period, with a few thousand rollup rows read
instead of up to a year of orders. `settle` first applies the caller's own pending order writes.
`drift` (run by `reconcile`) compares the rollup with a fresh aggregation of `order_history`;
`rebuild` recomputes it (benchmarks, repair).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, false, or_, text
from sqlalchemy.orm import Session

from jivapay.database.models import OrderStatsStore, OrderStatsTrader
from jivapay.enums import StatsGrain

TRIGGER = "order_stats_rollup"

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "order_stats_store": ("merchant_id", "grain", "period_start", "store_id"),
    "order_stats_trader": ("trader_id", "grain", "period_start"),
}
COMMON_KEYS = ("order_type", "status", "fiat_currency_id", "crypto_currency_id")
MEASURES = (
    "orders",
    "disputes",
    "amount_fiat",
    "amount_crypto",
    "store_commission",
    "trader_commission",
    "platform_profit",
    "completion_seconds",
)

# From scratch: every order's share in the rows of its creation day and month.
_AGGREGATE = """
SELECT {keys}, {common}, count(*) AS orders, count(disputed_at) AS disputes,
       sum(amount_fiat) AS amount_fiat, sum(amount_crypto) AS amount_crypto,
       sum(store_commission) AS store_commission, sum(trader_commission) AS trader_commission,
       sum(platform_profit) AS platform_profit,
       COALESCE(sum(EXTRACT(epoch FROM completed_at - created_at)), 0) AS completion_seconds
FROM order_history
CROSS JOIN LATERAL (VALUES
    ('day', (created_at AT TIME ZONE 'UTC')::date),
    ('month', date_trunc('month', created_at AT TIME ZONE 'UTC')::date)
) AS g (grain, period_start)
GROUP BY {keys}, {common}
"""

# Rows where the rollup and the aggregation differ (an all-zero rollup row equals no row).
_DRIFT = """
SELECT {keys}, {common}, {pairs}
FROM ({aggregate}) AS a
FULL JOIN {table} AS r USING ({keys}, {common})
WHERE {differs}
ORDER BY {keys}, {common}
"""


def _columns(table: str) -> dict[str, str]:
    return {
        "keys": ", ".join(TABLE_KEYS[table]),
        "common": ", ".join(COMMON_KEYS),
    }


def settle(session: Session) -> None:
    """Apply the rollup changes of the caller's own order writes not committed yet (the trigger
    is deferred to commit), so a statistics read in the same transaction sees them. The trigger
    stays immediate until the transaction (or the savepoint this runs in) ends."""
    session.execute(text(f"SET CONSTRAINTS {TRIGGER} IMMEDIATE"))


@dataclass(frozen=True)
class Split:
    """A half-open period cut for reading: `direct` ranges (partial UTC days, from the orders),
    whole `days` ranges and whole `months` (from the rollup), together exactly the period."""

    direct: list[tuple[datetime, datetime]] = field(default_factory=list)
    days: list[tuple[date, date]] = field(default_factory=list)
    months: tuple[date, date] | None = None

    @property
    def uses_rollup(self) -> bool:
        return bool(self.days) or self.months is not None


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def split_period(start: datetime, end: datetime) -> Split:
    """Cut `[start, end)` into partial days, whole UTC days and whole UTC months."""
    start, end = _utc(start), _utc(end)
    first_day = start.date() if start == _midnight(start.date()) else start.date() + timedelta(1)
    last_day = end.date()  # exclusive
    if first_day >= last_day:
        return Split(direct=[(start, end)])
    direct = []
    if start < _midnight(first_day):
        direct.append((start, _midnight(first_day)))
    if _midnight(last_day) < end:
        direct.append((_midnight(last_day), end))
    first_month = first_day if first_day.day == 1 else _next_month(first_day)
    last_month = last_day.replace(day=1)  # exclusive
    if first_month >= last_month:
        return Split(direct=direct, days=[(first_day, last_day)])
    days = [(a, b) for a, b in ((first_day, first_month), (last_month, last_day)) if a < b]
    return Split(direct=direct, days=days, months=(first_month, last_month))


def rollup_condition(
    table: type[OrderStatsStore] | type[OrderStatsTrader], split: Split
) -> ColumnElement[bool]:
    """The rollup rows that together cover the whole days and months of `split`."""
    arms: list[ColumnElement[bool]] = [
        and_(table.grain == StatsGrain.DAY.value, table.period_start >= a, table.period_start < b)
        for a, b in split.days
    ]
    if split.months is not None:
        a, b = split.months
        arms.append(
            and_(
                table.grain == StatsGrain.MONTH.value,
                table.period_start >= a,
                table.period_start < b,
            )
        )
    return or_(*arms) if arms else false()


@dataclass(frozen=True)
class Drift:
    """One rollup row that differs from the aggregation: its key and both sets of measures."""

    table: str
    key: dict[str, Any]
    expected: dict[str, Decimal]
    actual: dict[str, Decimal]


def drift(session: Session) -> list[Drift]:
    """Every rollup row that differs from a fresh aggregation of `order_history` (empty when the
    rollup is exact). Reads every order: run by the daily `reconcile`, not per request."""
    settle(session)
    found: list[Drift] = []
    for table in TABLE_KEYS:
        cols = _columns(table)
        pairs = ", ".join(
            f"COALESCE(a.{m}, 0) AS a_{m}, COALESCE(r.{m}, 0) AS r_{m}" for m in MEASURES
        )
        differs = " OR ".join(f"COALESCE(a.{m}, 0) <> COALESCE(r.{m}, 0)" for m in MEASURES)
        sql = _DRIFT.format(
            table=table,
            aggregate=_AGGREGATE.format(**cols),
            pairs=pairs,
            differs=differs,
            **cols,
        )
        for row in session.execute(text(sql)).mappings():
            found.append(
                Drift(
                    table=table,
                    key={k: row[k] for k in (*TABLE_KEYS[table], *COMMON_KEYS)},
                    expected={m: Decimal(row[f"a_{m}"]) for m in MEASURES},
                    actual={m: Decimal(row[f"r_{m}"]) for m in MEASURES},
                )
            )
    return found


def rebuild(connection: Connection) -> None:
    """Recompute both rollup tables from `order_history` (a bulk load that bypassed the trigger,
    or a repair after `drift` found a difference). The truncate locks each table until the
    caller commits: a commit that would add to it waits and adds its orders afterwards."""
    for table in TABLE_KEYS:
        cols = _columns(table)
        connection.execute(text(f"TRUNCATE {table}"))
        connection.execute(
            text(
                f"INSERT INTO {table} ({cols['keys']}, {cols['common']}, {', '.join(MEASURES)}) "
                + _AGGREGATE.format(**cols)
            )
        )
