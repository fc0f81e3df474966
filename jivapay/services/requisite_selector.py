"""Choosing a trader's requisite for an order (docs/lifecycle.md, assign).

One statement finds the best eligible requisite and locks it (`FOR UPDATE OF req_traders SKIP
LOCKED`, so parallel workers take different requisites): online (`online_filter`: active user,
trader in work and enabled by the teamlead, the direction allowed for trader and requisite, approved
and not excluded; the same filter the online statistics use), same fiat,
the target method/bank when given, the amount within the requisite's and trader's static limits,
fewer open orders than `max_concurrent_orders`, and for a PayIn a trader deposit that covers the hold.
Candidates are ordered by the trader's priority (`trafic_priority`, mirrored on each requisite as
`distribution_weight` so that the order is an index of `req_traders`: PostgreSQL walks it and stops at
the first requisite that passes instead of sorting all of them), then `last_used_at` NULLS FIRST
(round-robin).

The dynamic limits are then checked on the locked candidate from counters kept current by the
transactions that open and close orders (`requisite_turnover_buckets`, `requisite_daily_turnover`,
`req_traders.open_orders`), never by summing order history: the check costs the same at a million
orders as at ten thousand. A candidate that fails stays excluded and the next one is tried. The
same round trip locks a PayIn's trader deposit: passed over while another transaction holds it.
When nothing was free only because other transactions held the rows, the order is `RequisiteBusy`
(lock timing, not capacity), and a retry may wait for them, briefly (`wait_for_locks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Row, TextClause, bindparam, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from jivapay.database.models import IncomingOrder
from jivapay.enums import OrderType
from jivapay.money import payin_hold
from jivapay.services.online_filter import online_sql
from jivapay.services.trader_day import trader_day
from jivapay.utils.exceptions import ConfigurationError, RequisiteBusy, RequisiteNotFound

log = structlog.get_logger(__name__)

# The rejection of a candidate whose trader's deposit row another worker holds: not a lack of
# money, only of timing (`RequisiteBusy`).
DEPOSIT_BUSY = "deposit_busy"
# No candidate was free, but some were there, each held by another transaction.
REQUISITE_BUSY = "requisite_busy"

# Enough to step past a few candidates whose dynamic limits are exhausted without looping forever.
MAX_CANDIDATES = 25

_CANDIDATE_SQL = """
SELECT r.id AS requisite_id, r.trader_id, r.payment_method_id, r.bank_id,
       s.total_limit, s.turnover_limit_minutes, s.turnover_day_max,
       tz.name AS time_zone,
       tc.commission_payin, tc.commission_payout
FROM req_traders r
JOIN full_requisites_settings s ON s.requisite_id = r.id
JOIN traders t ON t.id = r.trader_id
JOIN users u ON u.id = t.user_id
LEFT JOIN time_zones tz ON tz.id = t.time_zone_id
LEFT JOIN LATERAL (
    SELECT c.commission_payin, c.commission_payout FROM trader_commissions c
    WHERE c.trader_id = t.id ORDER BY c.created_at DESC, c.id DESC LIMIT 1
) tc ON true
{deposit_join}
WHERE {online}
  AND r.fiat_currency_id = :fiat_currency_id
  AND (CAST(:payment_method_id AS BIGINT) IS NULL OR r.payment_method_id = :payment_method_id)
  AND (CAST(:bank_id AS BIGINT) IS NULL OR r.bank_id = :bank_id)
  AND s.lower_limit <= :amount_fiat AND s.upper_limit >= :amount_fiat
  AND (t.base_lower_limit IS NULL OR t.base_lower_limit <= :amount_fiat)
  AND (t.base_upper_limit IS NULL OR t.base_upper_limit >= :amount_fiat)
  AND (s.max_concurrent_orders IS NULL OR r.open_orders < s.max_concurrent_orders)
  AND r.id <> ALL(:excluded)
  {deposit_filter}
ORDER BY r.distribution_weight, r.last_used_at NULLS FIRST, r.id
LIMIT 1
{lock}
"""

# The trader's available deposit must cover C - round_half_up(C * t / 100, 8). C*t is exact in
# NUMERIC; rounding it to 6 places and shifting by 0.01 rounds C*t/100 to 8 places with no second
# rounding (a plain `/ 100` may round at PostgreSQL's chosen division scale first).
_DEPOSIT_JOIN = (
    "JOIN balance_traders bt ON bt.trader_id = t.id AND bt.crypto_currency_id = :crypto_currency_id"
)
PAYIN_HOLD_SQL = ":amount_crypto - ROUND(:amount_crypto * tc.commission_payin, 6) * 0.01"
_DEPOSIT_FILTER = (
    f"AND tc.commission_payin IS NOT NULL AND bt.balance - bt.frozen >= {PAYIN_HOLD_SQL}"
)


def _candidate_statement(order_type: OrderType, lock: str) -> TextClause:
    # "Online" (user, switches, status, directions) is the shared filter of `online_filter`.
    online = online_sql(order_type)
    if order_type == OrderType.PAYIN:
        sql = _CANDIDATE_SQL.format(
            deposit_join=_DEPOSIT_JOIN, deposit_filter=_DEPOSIT_FILTER, online=online, lock=lock
        )
    else:
        sql = _CANDIDATE_SQL.format(deposit_join="", deposit_filter="", online=online, lock=lock)
    return text(sql).bindparams(bindparam("excluded", expanding=False))


_STATEMENTS = {
    kind: _candidate_statement(kind, "FOR UPDATE OF r SKIP LOCKED") for kind in OrderType
}
# The first candidate of a try that waits for busy rows (`wait_for_locks`).
_WAITING_STATEMENTS = {kind: _candidate_statement(kind, "FOR UPDATE OF r") for kind in OrderType}
# After no candidate was free: was there one another transaction held? (Locks nothing.)
_PROBES = {kind: _candidate_statement(kind, "") for kind in OrderType}

# One round trip for every dynamic check of the locked candidate: turnover in the rolling window,
# turnover today, and (PayIn) the trader's available deposit, whose row it locks for the freeze.
# SKIP LOCKED: a deposit another worker holds reads as NULL (the candidate is passed over for this
# attempt) instead of being waited for; waiting here while holding the deposit row of a candidate
# rejected a moment earlier let two workers lock two traders' deposits in opposite order (deadlock).
_DYNAMIC_SQL = """
SELECT
  (SELECT COALESCE(SUM(amount_fiat), 0) FROM requisite_turnover_buckets
    WHERE requisite_id = :rid AND bucket_start >= :since) AS window_used,
  (SELECT amount_fiat FROM requisite_daily_turnover
    WHERE requisite_id = :rid AND day = :day) AS day_used,
  {deposit} AS available
"""
_LOCKED_DEPOSIT = (
    "(SELECT balance - frozen FROM balance_traders "
    "WHERE trader_id = :tid AND crypto_currency_id = :cid FOR UPDATE SKIP LOCKED)"
)
_DYNAMIC = {
    OrderType.PAYIN: text(_DYNAMIC_SQL.format(deposit=_LOCKED_DEPOSIT)),
    OrderType.PAYOUT: text(_DYNAMIC_SQL.format(deposit="NULL")),
}
# A try after only busy candidates (`wait_for_locks`) waits for its best candidate's requisite row
# and then its trader's deposit instead of passing over them, and for no other row: it holds its
# intake row, then a requisite, then a balance, the lock order of docs/architecture.md, and never a
# second requisite or deposit while it waits. It waits at most `LOCK_WAIT`, well under PostgreSQL's
# deadlock_timeout (1 s by default), so even a transaction that broke that order (a deposit, then a
# requisite this one holds) is never aborted for it: this one gives up first. Without the wait a
# worker whose candidates another worker's batch keeps taking would never find one free
# (docs/performance.md, "Batches").
LOCK_WAIT = "100ms"
_WAITED_DEPOSIT = text(_DYNAMIC_SQL.format(deposit=_LOCKED_DEPOSIT.replace(" SKIP LOCKED", "")))
_WAIT_AT_MOST = text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
_WAIT_AS_BEFORE = text("SET LOCAL lock_timeout TO DEFAULT")
_LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class SelectedRequisite:
    requisite_id: int
    trader_id: int
    payment_method_id: int
    bank_id: int
    trader_commission_percent: Decimal
    turnover_bucket: datetime
    turnover_day: date


def turnover_slots(now: datetime, time_zone: str | None) -> tuple[datetime, date]:
    """The minute bucket (UTC) and the trader-local day (`trader_day`: the IANA zone `time_zone`,
    None for UTC) an order assigned at `now` counts in."""
    return now.replace(second=0, microsecond=0), trader_day(now, time_zone)


def _waited(session: Session, statement: TextClause, parameters: dict[str, Any], what: str) -> Any:
    """The first row of `statement`, run under `_WAIT_AT_MOST`: `RequisiteBusy` when a row it
    locks stayed busy that long (the attempt's transaction is then aborted)."""
    try:
        return session.execute(statement, parameters).first()
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            raise RequisiteBusy(f"{what} stayed busy for {LOCK_WAIT}") from exc
        raise


def _dynamic_usage(
    session: Session, order: IncomingOrder, parameters: dict[str, Any], *, wait: bool
) -> Row[Any]:
    """The candidate's turnover and (PayIn) its trader's available deposit, whose row it locks:
    passed over when another transaction holds it, or, with `wait`, waited for (`_waited`)."""
    if not wait:
        return session.execute(_DYNAMIC[OrderType(order.order_type)], parameters).one()
    used: Row[Any] = _waited(
        session, _WAITED_DEPOSIT, parameters, f"the deposit of trader {parameters['tid']}"
    )
    return used


def _rejection(
    session: Session,
    row: Row[Any],
    order: IncomingOrder,
    hold: Decimal | None,
    bucket: datetime,
    day: date,
    *,
    wait: bool = False,
) -> str | None:
    """Why the locked candidate cannot take the order now, or None if it can."""
    window = int(row.turnover_limit_minutes or 0)
    parameters = {
        "rid": row.requisite_id,
        # Buckets are whole minutes: the window reaches into the minute it began in, so an order
        # inside it is never left out (it may count one that left it under a minute ago).
        "since": bucket - timedelta(minutes=window),
        "day": day,
        "tid": row.trader_id,
        "cid": order.crypto_currency_id,
    }
    used = _dynamic_usage(session, order, parameters, wait=wait and hold is not None)
    if (
        row.total_limit is not None
        and window
        and used.window_used + order.amount_fiat > row.total_limit
    ):
        return "window_turnover"
    if (
        row.turnover_day_max is not None
        and (used.day_used or 0) + order.amount_fiat > row.turnover_day_max
    ):
        return "day_turnover"
    # Another requisite of the same trader may have taken deposit since the scan: checked under
    # the balance row lock, which the freeze that follows keeps (NULL: another worker holds it).
    if hold is not None and used.available is None:
        return DEPOSIT_BUSY
    if hold is not None and used.available < hold:
        return "trader_deposit"
    return None


def find_suitable_requisite(
    session: Session, *, order: IncomingOrder, now: datetime, wait_for_locks: bool = False
) -> SelectedRequisite:
    """Lock and return the best requisite for `order`, or raise `RequisiteNotFound`
    (`RequisiteBusy` when the requisites or deposits that could take it were only held by other
    transactions).

    `wait_for_locks`: wait (at most `LOCK_WAIT`) for the best candidate's requisite and deposit
    rows instead of passing over them when busy; only for a transaction holding neither kind."""
    order_type = OrderType(order.order_type)
    params = {
        "fiat_currency_id": order.fiat_currency_id,
        "crypto_currency_id": order.crypto_currency_id,
        "payment_method_id": order.target_payment_method_id,
        "bank_id": order.target_bank_id,
        "amount_fiat": order.amount_fiat,
        "amount_crypto": order.amount_crypto,
    }
    excluded: list[int] = []
    rejected: dict[str, int] = {}
    missing_commission: list[int] = []
    waiting = wait_for_locks
    if waiting:
        session.execute(_WAIT_AT_MOST)
    for _ in range(MAX_CANDIDATES):
        candidates = {**params, "excluded": excluded}
        if waiting:
            row = _waited(session, _WAITING_STATEMENTS[order_type], candidates, "a requisite")
        else:
            row = session.execute(_STATEMENTS[order_type], candidates).first()
        if row is None:
            if not waiting and session.execute(_PROBES[order_type], candidates).first():
                rejected[REQUISITE_BUSY] = 1  # eligible ones left, each held by another worker
            break
        excluded.append(row.requisite_id)
        percent = row.commission_payin if order_type == OrderType.PAYIN else row.commission_payout
        if percent is None:
            waiting = _stop_waiting(session, waiting)
            missing_commission.append(row.trader_id)
            continue
        bucket, day = turnover_slots(now, row.time_zone)
        hold = (
            payin_hold_for(order.amount_crypto, percent) if order_type == OrderType.PAYIN else None
        )
        reason = _rejection(session, row, order, hold, bucket, day, wait=waiting)
        # Only the first candidate and its deposit are waited for: holding them, no other.
        waiting = _stop_waiting(session, waiting)
        if reason is not None:
            rejected[reason] = rejected.get(reason, 0) + 1
            continue
        return SelectedRequisite(
            requisite_id=row.requisite_id,
            trader_id=row.trader_id,
            payment_method_id=row.payment_method_id,
            bank_id=row.bank_id,
            trader_commission_percent=percent,
            turnover_bucket=bucket,
            turnover_day=day,
        )
    if missing_commission:
        raise ConfigurationError(
            f"trader(s) {sorted(set(missing_commission))} have no commission row",
            extra={"internal": True},
        )
    detail = ", ".join(f"{k}={v}" for k, v in sorted(rejected.items())) or "no eligible requisite"
    if DEPOSIT_BUSY in rejected or REQUISITE_BUSY in rejected:
        raise RequisiteBusy(f"every requisite that could take this order is busy ({detail})")
    raise RequisiteNotFound(f"no requisite can take this order ({detail})")


def _stop_waiting(session: Session, waiting: bool) -> bool:
    if waiting:
        session.execute(_WAIT_AS_BEFORE)
    return False


def payin_hold_for(amount_crypto: Decimal, trader_percent: Decimal) -> Decimal:
    """The trader-deposit hold of a PayIn at this trader rate (`money.payin_hold`)."""
    return payin_hold(amount_crypto, trader_percent)
