"""A merchant's statistics per store and order type for a period of at most 366 days: counts by
status (the intake statuses of orders never assigned, then the assigned orders' statuses),
completed turnover in fiat and crypto, store commission paid, conversion (completed / assigned)
and the average time from assignment to completion.

The assigned orders come from the rollup `order_stats_store` for the whole UTC days and months of
the period and from `order_history` for the partial days at its ends (`order_stats_rollup`), whose
index by (merchant_id, created_at) includes the summed columns (migration 0004), so those scans are
index-only. The orders never assigned come from `incoming_orders` through its partial index of
never-assigned rows (store_id, created_at): only the orders that failed or wait for a trader.
`bench/merchant_statistics.py` prints the plans and timings at 1,000,000 orders. A period is
[date_from, date_to).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import BigInteger, Select, extract, func, select, union_all
from sqlalchemy.orm import Session

from jivapay.database.base import as_utc, utcnow
from jivapay.database.models import (
    CryptoCurrency,
    FiatCurrency,
    IncomingOrder,
    MerchantStore,
    OrderHistory,
    OrderStatsStore,
)
from jivapay.enums import IncomingOrderStatus, MerchantOrderStatus, OrderStatus, OrderType
from jivapay.money import CRYPTO_QUANTUM, FIAT_QUANTUM
from jivapay.schemas.merchant import MerchantStatisticsRead, StatusCount, StoreTypeStatisticsRead
from jivapay.security import Principal
from jivapay.services import order_stats_rollup, reference_data
from jivapay.utils.exceptions import NotFound, ValidationFailed
from jivapay.utils.query_filters import (
    incoming_orders_visible_to,
    orders_visible_to,
    stores_visible_to,
)

MAX_PERIOD = timedelta(days=366)
DEFAULT_PERIOD = timedelta(days=30)
_ZERO = Decimal("0")
_RATIO = Decimal("0.0001")


@dataclass
class _Acc:
    counts: dict[str, int] = field(default_factory=dict)
    turnover_fiat: Decimal = _ZERO
    turnover_crypto: Decimal = _ZERO
    commission: Decimal = _ZERO
    completion_seconds: Decimal = _ZERO


def resolve_period(
    date_from: datetime | None, date_to: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The period asked for (default: the last 30 days); `ValidationFailed` beyond 366 days."""
    end = as_utc(date_to or now or utcnow())
    try:
        start = as_utc(date_from) if date_from is not None else end - DEFAULT_PERIOD
    except OverflowError:
        raise ValidationFailed("date_to is out of range", code="bad_period") from None
    if start >= end:
        raise ValidationFailed("date_from must be before date_to", code="bad_period")
    if end - start > MAX_PERIOD:
        raise ValidationFailed("the period is at most 366 days", code="period_too_long")
    return start, end


def order_stats_query(
    principal: Principal, start: datetime, end: datetime, store_id: int | None
) -> Select[int, str, str, int, Decimal, Decimal, Decimal, int]:
    """Assigned orders created in [start, end) grouped by store, type and status."""
    stmt = (
        select(
            OrderHistory.store_id,
            OrderHistory.order_type,
            OrderHistory.status,
            func.count(),
            func.sum(OrderHistory.amount_fiat),
            func.sum(OrderHistory.amount_crypto),
            func.sum(OrderHistory.store_commission),
            func.sum(extract("epoch", OrderHistory.completed_at - OrderHistory.created_at)),
        )
        .where(
            orders_visible_to(principal),
            OrderHistory.created_at >= start,
            OrderHistory.created_at < end,
        )
        .group_by(OrderHistory.store_id, OrderHistory.order_type, OrderHistory.status)
    )
    if store_id is not None:
        stmt = stmt.where(OrderHistory.store_id == store_id)
    return stmt


def rollup_stats_query(
    principal: Principal, split: order_stats_rollup.Split, store_id: int | None
) -> Select[*tuple[Any, ...]]:
    """The same groups as `order_stats_query`, from the rollup rows of the whole days and months
    of `split`."""
    r = OrderStatsStore
    stmt = (
        select(
            r.store_id,
            r.order_type,
            r.status,
            func.sum(r.orders).cast(BigInteger),
            func.sum(r.amount_fiat),
            func.sum(r.amount_crypto),
            func.sum(r.store_commission),
            func.sum(r.completion_seconds),
        )
        .where(orders_visible_to(principal, r), order_stats_rollup.rollup_condition(r, split))
        .group_by(r.store_id, r.order_type, r.status)
        .having(func.sum(r.orders) != 0)
    )
    if store_id is not None:
        stmt = stmt.where(r.store_id == store_id)
    return stmt


def order_stats_statements(
    session: Session, principal: Principal, start: datetime, end: datetime, store_id: int | None
) -> list[Select[*tuple[Any, ...]]]:
    """The statements that together group the assigned orders of [start, end): one per partial
    day at the ends, one over the rollup (settled first) for the whole days and months."""
    split = order_stats_rollup.split_period(start, end)
    stmts: list[Select[*tuple[Any, ...]]] = [
        order_stats_query(principal, a, b, store_id) for a, b in split.direct
    ]
    if split.uses_rollup:
        order_stats_rollup.settle(session)
        stmts.append(rollup_stats_query(principal, split, store_id))
    return stmts


def intake_stats_query(
    principal: Principal, start: datetime, end: datetime, store_id: int | None
) -> Select[int, str, str, int]:
    """Orders never assigned grouped by store, type and intake status."""
    stmt = (
        select(
            IncomingOrder.store_id,
            IncomingOrder.order_type,
            IncomingOrder.status,
            func.count(),
        )
        .where(
            incoming_orders_visible_to(principal),
            IncomingOrder.status != IncomingOrderStatus.ASSIGNED.value,
            IncomingOrder.created_at >= start,
            IncomingOrder.created_at < end,
        )
        .group_by(IncomingOrder.store_id, IncomingOrder.order_type, IncomingOrder.status)
    )
    if store_id is not None:
        stmt = stmt.where(IncomingOrder.store_id == store_id)
    return stmt


def merchant_statistics(
    session: Session,
    *,
    principal: Principal,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    store_id: int | None = None,
) -> MerchantStatisticsRead:
    """Statistics of the caller's stores (one row per store and order type) for the period;
    `NotFound` when `store_id` is not one of them."""
    start, end = resolve_period(date_from, date_to)
    stores_stmt = select(MerchantStore).where(stores_visible_to(principal))
    if store_id is not None:
        stores_stmt = stores_stmt.where(MerchantStore.id == store_id)
    stores = session.scalars(stores_stmt.order_by(MerchantStore.id)).all()
    if store_id is not None and not stores:
        # Another merchant's store (or none) answers as a missing one, never an empty answer
        # that would tell the two apart from the caller's own store without orders.
        raise NotFound("Store not found", code="store_not_found")
    acc: dict[tuple[int, str], _Acc] = defaultdict(_Acc)
    stmts = order_stats_statements(session, principal, start, end, store_id)
    # One round trip: the partial days and the rollup, UNION ALL; a group may come in several rows.
    for sid, kind, status, n, fiat, crypto, fee, seconds in session.execute(
        stmts[0] if len(stmts) == 1 else union_all(*stmts)
    ):
        a = acc[(sid, kind)]
        a.counts[status] = a.counts.get(status, 0) + n
        if status == OrderStatus.COMPLETED:
            a.turnover_fiat += fiat or _ZERO
            a.turnover_crypto += crypto or _ZERO
            a.commission += fee or _ZERO
            a.completion_seconds += Decimal(seconds or 0)
    assigned = {key: sum(a.counts.values()) for key, a in acc.items()}
    for sid, kind, status, n in session.execute(
        intake_stats_query(principal, start, end, store_id)
    ):
        acc[(sid, kind)].counts[status] = n
    items = []
    for store in stores:
        fiat_code = reference_data.currency_code(session, FiatCurrency, store.fiat_currency_id)
        crypto_code = reference_data.currency_code(
            session, CryptoCurrency, store.crypto_currency_id
        )
        for kind in OrderType:
            a = acc.get((store.id, kind.value), _Acc())
            done = a.counts.get(OrderStatus.COMPLETED.value, 0)
            reached = assigned.get((store.id, kind.value), 0)
            items.append(
                StoreTypeStatisticsRead(
                    store_id=store.id,
                    store_name=store.store_name,
                    order_type=kind,
                    fiat_currency=fiat_code or "",
                    crypto_currency=crypto_code or "",
                    total_orders=sum(a.counts.values()),
                    counts_by_status=[
                        StatusCount(status=s, count=a.counts[s.value])
                        for s in MerchantOrderStatus
                        if a.counts.get(s.value)
                    ],
                    completed_count=done,
                    completed_turnover_fiat=a.turnover_fiat.quantize(FIAT_QUANTUM),
                    completed_turnover_crypto=a.turnover_crypto.quantize(CRYPTO_QUANTUM),
                    commission_paid=a.commission.quantize(CRYPTO_QUANTUM),
                    assigned_count=reached,
                    conversion=(Decimal(done) / reached).quantize(_RATIO, ROUND_HALF_UP)
                    if reached
                    else None,
                    average_completion_seconds=int(
                        (a.completion_seconds / done).to_integral_value(ROUND_HALF_UP)
                    )
                    if done
                    else None,
                )
            )
    return MerchantStatisticsRead(date_from=start, date_to=end, items=items)
