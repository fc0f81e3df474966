"""The requisite's usage counters, the only code that writes them: `req_traders.open_orders`
(with `last_used_at`, the round-robin key), the per-minute `requisite_turnover_buckets` and the
trader-local `requisite_daily_turnover`.

The selector reads these counters instead of summing order history, so each write here mirrors one
step of the order lifecycle (docs/lifecycle.md): assignment opens a slot and adds the order's fiat
amount to its minute bucket and day; completion closes the slot and keeps the turnover (the money
moved); cancel and expiry close the slot and take the amount back out. The order row stores the
bucket and the day it was counted in, so the reverse step subtracts from the same rows. The
assignment's writes are given as CTEs for the statement that also writes the order row.

Callers hold the requisite row (the selector's `FOR UPDATE` at assignment, or the order row before
the requisite on close: docs/architecture.md, lock order); the counter rows are upserted after it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import CTE, ColumnElement, column, delete, func, select, text, update
from sqlalchemy.orm import Session

from jivapay.database.models import OrderHistory, ReqTrader, RequisiteTurnoverBucket
from jivapay.schemas.requisites import MAX_TURNOVER_WINDOW_MINUTES
from jivapay.utils.exceptions import InvariantViolation

# The longest rolling window a requisite may use, plus the minute bucket a window reaches back into
# (`window_start`); older buckets can never count again.
MAX_WINDOW = timedelta(minutes=MAX_TURNOVER_WINDOW_MINUTES + 1)

# An assignment's three counter writes (last use and open orders, the turnover of the order's
# minute bucket and of its day), as data-modifying CTEs whose bound parameters are named
# `counter_*` (no column of any table is named so: an INSERT or UPDATE in the same statement would
# take such a parameter into its column list): the order processor writes them in the statement
# of the order row (`assigned_counter_ctes`, `assigned_counter_parameters`, `check_counted`).
_ASSIGNED_WRITES = {
    "counted_requisite": """
UPDATE req_traders SET last_used_at = :counter_now, open_orders = open_orders + 1
WHERE id = :counter_rid RETURNING id""",
    "counted_bucket": """
INSERT INTO requisite_turnover_buckets (requisite_id, bucket_start, amount_fiat)
VALUES (:counter_rid, :counter_bucket, :counter_amount) ON CONFLICT (requisite_id, bucket_start)
DO UPDATE SET amount_fiat = requisite_turnover_buckets.amount_fiat + EXCLUDED.amount_fiat
RETURNING requisite_id AS id""",
    "counted_day": """
INSERT INTO requisite_daily_turnover (requisite_id, day, amount_fiat)
VALUES (:counter_rid, :counter_day, :counter_amount) ON CONFLICT (requisite_id, day)
DO UPDATE SET amount_fiat = requisite_daily_turnover.amount_fiat + EXCLUDED.amount_fiat
RETURNING requisite_id AS id""",
}


def assigned_counter_ctes() -> tuple[list[CTE], ColumnElement[int]]:
    """The counter writes of one assignment as CTEs, and the number of rows they touched (3 when
    all were written) as a column for the statement's result."""
    ctes = [text(sql).columns(column("id")).cte(name) for name, sql in _ASSIGNED_WRITES.items()]
    counts = [select(func.count()).select_from(cte).scalar_subquery() for cte in ctes]
    return ctes, (counts[0] + counts[1] + counts[2]).label("counted")


def assigned_counter_parameters(
    *, requisite_id: int, amount_fiat: Decimal, bucket: datetime, day: date, now: datetime
) -> dict[str, object]:
    """The values of `assigned_counter_ctes`: an order of `amount_fiat` assigned at `now`."""
    return {
        "counter_rid": requisite_id,
        "counter_now": now,
        "counter_amount": amount_fiat,
        "counter_bucket": bucket,
        "counter_day": day,
    }


def check_counted(requisite_id: int, counted: int) -> None:
    """Fail the assignment when its counter writes did not all land (the requisite row is gone)."""
    if counted != 3:
        raise InvariantViolation(f"requisite {requisite_id} counters were not updated")


# GREATEST: a bucket pruned meanwhile is simply absent (no row updated), never negative.
_UNCOUNT_BUCKET = text(
    "UPDATE requisite_turnover_buckets SET amount_fiat = GREATEST(amount_fiat - :amount, 0) "
    "WHERE requisite_id = :rid AND bucket_start = :bucket"
)
_UNCOUNT_DAY = text(
    "UPDATE requisite_daily_turnover SET amount_fiat = GREATEST(amount_fiat - :amount, 0) "
    "WHERE requisite_id = :rid AND day = :day"
)


def _close_slot(session: Session, order: OrderHistory) -> None:
    session.execute(
        update(ReqTrader)
        .where(ReqTrader.id == order.requisite_id)
        .values(open_orders=ReqTrader.open_orders - 1)
    )


def count_completed_order(session: Session, *, order: OrderHistory) -> None:
    """The order completed: its slot closes; its turnover stays (the money moved)."""
    _close_slot(session, order)


def count_canceled_order(session: Session, *, order: OrderHistory) -> None:
    """The order was canceled or expired: its slot closes and its amount leaves bucket and day."""
    _close_slot(session, order)
    params = {"rid": order.requisite_id, "amount": order.amount_fiat}
    session.execute(_UNCOUNT_BUCKET, {**params, "bucket": order.turnover_bucket})
    session.execute(_UNCOUNT_DAY, {**params, "day": order.turnover_day})


def prune_old_turnover(session: Session, *, now: datetime) -> int:
    """Delete minute buckets no rolling window reaches and day rows older than a week.

    Returns how many minute buckets were deleted.
    """
    result = session.execute(
        delete(RequisiteTurnoverBucket).where(
            RequisiteTurnoverBucket.bucket_start < now - MAX_WINDOW
        )
    )
    # Day rows are read for "today" in the trader's zone only; a week covers every time zone.
    session.execute(text("DELETE FROM requisite_daily_turnover WHERE day < CURRENT_DATE - 7"))
    return int(getattr(result, "rowcount", 0) or 0)
