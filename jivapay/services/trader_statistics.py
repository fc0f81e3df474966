"""Order statistics of traders for a period: counts by type and status, completed turnover in fiat
and crypto, the trader commission earned and disputes, for one trader or for every trader. The
same grouped rows come from `order_history` for the partial UTC days at the period's ends and from
the rollup `order_stats_trader` for its whole days and months (`order_stats_rollup`)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, func, select, true, union_all
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import CryptoCurrency, FiatCurrency, OrderHistory, OrderStatsTrader
from jivapay.enums import OrderStatus, OrderType
from jivapay.schemas.traders import AmountRead, TraderStatisticsRead, TraderStatsGroup
from jivapay.services import order_stats_rollup
from jivapay.utils.exceptions import ValidationFailed

MAX_PERIOD = timedelta(days=366)
DEFAULT_PERIOD = timedelta(days=30)


def period(
    date_from: datetime | None, date_to: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The period asked for (default: the last 30 days); 422 if reversed or over 366 days."""
    end = date_to or now or utcnow()
    try:
        start = date_from or end - DEFAULT_PERIOD
    except OverflowError:
        raise ValidationFailed("date_to is out of range", code="bad_period") from None
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationFailed("dates need a time zone offset, e.g. 2026-01-01T00:00:00Z")
    if start > end:
        raise ValidationFailed("date_from must not be after date_to", code="bad_period")
    if end - start > MAX_PERIOD:
        raise ValidationFailed("the period is at most 366 days", code="bad_period")
    return start, end


def check_range(date_from: datetime | None, date_to: datetime | None) -> None:
    """422 unless each date given has a time zone offset and `date_from` is not after `date_to`."""
    for value in (date_from, date_to):
        if value is not None and value.tzinfo is None:
            raise ValidationFailed("dates need a time zone offset, e.g. 2026-01-01T00:00:00Z")
    if date_from is not None and date_to is not None and date_from > date_to:
        raise ValidationFailed("date_from must not be after date_to", code="bad_period")


def _amounts(totals: dict[str, Decimal]) -> list[AmountRead]:
    return [AmountRead(currency=c, amount=a) for c, a in sorted(totals.items())]


def _grouped(
    source: type[OrderHistory] | type[OrderStatsTrader],
    where: list[ColumnElement[bool]],
    count: Any,
    disputes: Any,
) -> Select[*tuple[Any, ...]]:
    """Per type, status and currency pair: orders, disputes and the completed sums of `source`."""
    completed = source.status == OrderStatus.COMPLETED.value
    return (
        select(
            source.order_type,
            source.status,
            FiatCurrency.code.label("fiat"),
            CryptoCurrency.code.label("crypto"),
            count.label("orders"),
            disputes.label("disputes"),
            func.coalesce(func.sum(source.amount_fiat).filter(completed), 0).label("fiat_sum"),
            func.coalesce(func.sum(source.amount_crypto).filter(completed), 0).label("crypto_sum"),
            func.coalesce(func.sum(source.trader_commission).filter(completed), 0).label(
                "commission"
            ),
        )
        .join(FiatCurrency, FiatCurrency.id == source.fiat_currency_id)
        .join(CryptoCurrency, CryptoCurrency.id == source.crypto_currency_id)
        .where(*where)
        .group_by(source.order_type, source.status, FiatCurrency.code, CryptoCurrency.code)
    )


def _statements(
    session: Session, date_from: datetime, date_to: datetime, trader_id: int | None
) -> list[Select[*tuple[Any, ...]]]:
    """One scan of the orders per partial UTC day at the ends, one over the rollup (settled
    first) for the whole days and months in between."""
    split = order_stats_rollup.split_period(date_from, date_to)
    oh, r = OrderHistory, OrderStatsTrader
    stmts = [
        _grouped(
            oh,
            [
                true() if trader_id is None else oh.trader_id == trader_id,
                oh.created_at >= a,
                oh.created_at < b,
            ],
            func.count(),
            func.count().filter(oh.disputed_at.is_not(None)),
        )
        for a, b in split.direct
    ]
    if split.uses_rollup:
        order_stats_rollup.settle(session)
        total = func.sum(r.orders)
        stmts.append(
            _grouped(
                r,
                [
                    true() if trader_id is None else r.trader_id == trader_id,
                    order_stats_rollup.rollup_condition(r, split),
                ],
                total.cast(BigInteger),
                func.sum(r.disputes).cast(BigInteger),
            ).having(total != 0)
        )
    return stmts


def order_statistics(
    session: Session,
    *,
    date_from: datetime,
    date_to: datetime,
    trader_id: int | None = None,
) -> TraderStatisticsRead:
    """Statistics of orders created in [date_from, date_to) of one trader (or all)."""
    stmts = _statements(session, date_from, date_to, trader_id)
    rows = session.execute(stmts[0] if len(stmts) == 1 else union_all(*stmts)).all()
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        g = groups.setdefault(
            row.order_type,
            {
                "orders": 0,
                "disputes": 0,
                "by_status": {s: 0 for s in OrderStatus},
                "fiat": defaultdict(Decimal),
                "crypto": defaultdict(Decimal),
                "commission": defaultdict(Decimal),
            },
        )
        g["orders"] += row.orders
        g["disputes"] += row.disputes
        g["by_status"][OrderStatus(row.status)] += row.orders
        if row.status == OrderStatus.COMPLETED:
            g["fiat"][row.fiat] += row.fiat_sum
            g["crypto"][row.crypto] += row.crypto_sum
            g["commission"][row.crypto] += row.commission
    return TraderStatisticsRead(
        date_from=date_from,
        date_to=date_to,
        groups=[
            TraderStatsGroup(
                order_type=OrderType(kind),
                orders=g["orders"],
                by_status=g["by_status"],
                disputes=g["disputes"],
                completed_turnover_fiat=_amounts(g["fiat"]),
                completed_turnover_crypto=_amounts(g["crypto"]),
                commission_earned=_amounts(g["commission"]),
            )
            for kind, g in sorted(groups.items())
        ],
    )
