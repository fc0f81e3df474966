"""The requisite's usage counters, the only code that writes them: `req_traders.open_orders`
(with `last_used_at`, the round-robin key), the per-minute `requisite_turnover_buckets` and the
trader-local `requisite_daily_turnover`.

The selector reads these counters instead of summing order history, so each write here mirrors one
step of the order lifecycle (docs/lifecycle.md): assignment opens a slot and adds the order's fiat
amount to its minute bucket and day; completion closes the slot and keeps the turnover (the money
moved); cancel and expiry close the slot and take the amount back out. The order row stores the
bucket and the day it was counted in, so the reverse step subtracts from the same rows.

Callers hold the requisite row (the selector's `FOR UPDATE` at assignment, or the order row before
the requisite on close: docs/architecture.md, lock order); the counter rows are upserted after it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import delete, text, update
from sqlalchemy.orm import Session

from jivapay.database.models import OrderHistory, ReqTrader, RequisiteTurnoverBucket
from jivapay.utils.exceptions import InvariantViolation

# The longest rolling window a requisite may use; older buckets can never count again.
MAX_WINDOW = timedelta(days=2)

# One round trip: last use, open orders, and the turnover of the order's minute bucket and day.
_COUNT_ASSIGNED = text(
    """
WITH req AS (
    UPDATE req_traders SET last_used_at = :now, open_orders = open_orders + 1
    WHERE id = :rid RETURNING id
), bucket AS (
    INSERT INTO requisite_turnover_buckets (requisite_id, bucket_start, amount_fiat)
    VALUES (:rid, :bucket, :amount) ON CONFLICT (requisite_id, bucket_start)
    DO UPDATE SET amount_fiat = requisite_turnover_buckets.amount_fiat + EXCLUDED.amount_fiat
    RETURNING 1
), day AS (
    INSERT INTO requisite_daily_turnover (requisite_id, day, amount_fiat)
    VALUES (:rid, :day, :amount) ON CONFLICT (requisite_id, day)
    DO UPDATE SET amount_fiat = requisite_daily_turnover.amount_fiat + EXCLUDED.amount_fiat
    RETURNING 1
)
SELECT (SELECT count(*) FROM req) + (SELECT count(*) FROM bucket) + (SELECT count(*) FROM day)
"""
)
# GREATEST: a bucket pruned meanwhile is simply absent (no row updated), never negative.
_UNCOUNT_BUCKET = text(
    "UPDATE requisite_turnover_buckets SET amount_fiat = GREATEST(amount_fiat - :amount, 0) "
    "WHERE requisite_id = :rid AND bucket_start = :bucket"
)
_UNCOUNT_DAY = text(
    "UPDATE requisite_daily_turnover SET amount_fiat = GREATEST(amount_fiat - :amount, 0) "
    "WHERE requisite_id = :rid AND day = :day"
)


def count_assigned_order(
    session: Session,
    *,
    requisite_id: int,
    amount_fiat: Decimal,
    bucket: datetime,
    day: date,
    now: datetime,
) -> None:
    """An order was assigned to the requisite: one more open order, its amount in bucket and day."""
    touched = session.execute(
        _COUNT_ASSIGNED,
        {"rid": requisite_id, "now": now, "amount": amount_fiat, "bucket": bucket, "day": day},
    ).scalar_one()
    if touched != 3:
        raise InvariantViolation(f"requisite {requisite_id} counters were not updated")


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
