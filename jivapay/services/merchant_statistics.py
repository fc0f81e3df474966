"""A merchant's statistics per store and order type for a period of at most 366 days: counts by
status (the intake statuses of orders never assigned, then the assigned orders' statuses),
completed turnover in fiat and crypto, store commission paid, conversion (completed / assigned)
and the average time from assignment to completion.

Two grouped queries, each served by an index made for it (migration 0004): `order_history` by
(merchant_id, created_at) with the summed columns included, so the scan is index-only, and
`incoming_orders` by (store_id, created_at) over the orders never assigned. `bench/merchant_statistics.py`
prints their plans and timings at 1,000,000 orders. A period is [date_from, date_to).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Select, extract, func, select
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import (
    CryptoCurrency,
    FiatCurrency,
    IncomingOrder,
    MerchantStore,
    OrderHistory,
)
from jivapay.enums import IncomingOrderStatus, MerchantOrderStatus, OrderStatus, OrderType
from jivapay.money import CRYPTO_QUANTUM, FIAT_QUANTUM
from jivapay.schemas.merchant import MerchantStatisticsRead, StatusCount, StoreTypeStatisticsRead
from jivapay.security import Principal
from jivapay.services import reference_data
from jivapay.utils.exceptions import ValidationFailed
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
    end = date_to or now or utcnow()
    start = date_from or end - DEFAULT_PERIOD
    if start >= end:
        raise ValidationFailed("date_from must be before date_to", code="bad_period")
    if end - start > MAX_PERIOD:
        raise ValidationFailed("the period is at most 366 days", code="period_too_long")
    return start, end


def order_stats_query(
    principal: Principal, start: datetime, end: datetime, store_id: int | None
) -> Select[int, str, str, int, Decimal, Decimal, Decimal, int]:
    """Assigned orders grouped by store, type and status (the bench explains this statement)."""
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
    """Statistics of the caller's stores (one row per store and order type) for the period."""
    start, end = resolve_period(date_from, date_to)
    stores_stmt = select(MerchantStore).where(stores_visible_to(principal))
    if store_id is not None:
        stores_stmt = stores_stmt.where(MerchantStore.id == store_id)
    stores = session.scalars(stores_stmt.order_by(MerchantStore.id)).all()
    acc: dict[tuple[int, str], _Acc] = defaultdict(_Acc)
    for sid, kind, status, n, fiat, crypto, fee, seconds in session.execute(
        order_stats_query(principal, start, end, store_id)
    ):
        a = acc[(sid, kind)]
        a.counts[status] = n
        if status == OrderStatus.COMPLETED:
            a.turnover_fiat, a.turnover_crypto = fiat or _ZERO, crypto or _ZERO
            a.commission = fee or _ZERO
            a.completion_seconds = Decimal(seconds or 0)
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
