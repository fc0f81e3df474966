"""Order statistics of a trader and of a teamlead's team, and the team summary.

Every figure comes from the same grouped rows per trader, status, type and currency pair: counts
by status and type, disputes, and the completed turnover per direction and currency pair (fiat,
crypto, trader commission). The whole UTC days and months of a period are read from the rollup
`order_stats_trader` (`order_stats_rollup`), the partial days at its ends from `order_history` by
the covering index `ix_order_history_trader_period` (migrations 0006 and 0011, index-only).
`bench/teamlead_statistics.py` shows the plans at 1,000,000 orders. Periods are half-open
`[date_from, date_to)` over `created_at`, at most 366 days.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Select, and_, distinct, func, select, union_all
from sqlalchemy.orm import Session

from jivapay.database.models import (
    CryptoCurrency,
    FiatCurrency,
    FullRequisitesSettings,
    OrderHistory,
    OrderStatsTrader,
    ReqTrader,
    Trader,
    User,
)
from jivapay.enums import OrderStatus, OrderType
from jivapay.permissions import Permission, check_permission
from jivapay.schemas.team import (
    OrderStatsBlock,
    TeamOrderStatsRead,
    TeamSummaryRead,
    TraderOrderStats,
    TraderStatsRead,
    TurnoverRead,
)
from jivapay.security import Principal
from jivapay.services import order_stats_rollup, reference_data
from jivapay.services.online_filter import online_conditions
from jivapay.services.team_service import ensure_trader_visible
from jivapay.utils.exceptions import ValidationFailed
from jivapay.utils.query_filters import requisites_visible_to, traders_visible_to

MAX_PERIOD = timedelta(days=366)
DEFAULT_PERIOD = timedelta(days=30)
_CONVERSION_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class Period:
    date_from: datetime
    date_to: datetime


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def resolve_period(
    *, date_from: datetime | None, date_to: datetime | None, now: datetime
) -> Period:
    """The period asked for (default: the last 30 days up to now); 422 if reversed or too long."""
    end = _aware(date_to) if date_to is not None else now
    try:
        start = _aware(date_from) if date_from is not None else end - DEFAULT_PERIOD
    except OverflowError:
        raise ValidationFailed("date_to is out of range") from None
    if start > end:
        raise ValidationFailed("date_from must not be after date_to")
    if end - start > MAX_PERIOD:
        raise ValidationFailed("the period must not be longer than 366 days")
    return Period(start, end)


@dataclass
class _Acc:
    """Running totals of one trader (or the team) while the grouped rows are folded."""

    by_status: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in OrderStatus})
    by_type: dict[str, int] = field(default_factory=lambda: {t.value: 0 for t in OrderType})
    disputes: int = 0
    completed: dict[tuple[str, int, int], list[Any]] = field(default_factory=dict)

    def add(self, row: Any) -> None:
        self.by_status[row.status] += row.n
        self.by_type[row.order_type] += row.n
        self.disputes += row.disputes
        if row.status == OrderStatus.COMPLETED.value:
            key = (row.order_type, row.fiat_currency_id, row.crypto_currency_id)
            acc = self.completed.setdefault(key, [0, Decimal(0), Decimal(0), Decimal(0)])
            acc[0] += row.n
            acc[1] += row.amount_fiat
            acc[2] += row.amount_crypto
            acc[3] += row.trader_commission

    def block(self, fiat: dict[int, str], crypto: dict[int, str]) -> OrderStatsBlock:
        total = sum(self.by_status.values())
        completed = self.by_status[OrderStatus.COMPLETED.value]
        conversion = (
            (Decimal(completed) / Decimal(total)).quantize(_CONVERSION_PLACES) if total else None
        )
        return OrderStatsBlock(
            orders_total=total,
            by_status=self.by_status,
            by_type=self.by_type,
            disputes=self.disputes,
            conversion=conversion,
            completed=[
                TurnoverRead(
                    order_type=order_type,
                    fiat_currency=fiat[fiat_id],
                    crypto_currency=crypto[crypto_id],
                    count=n,
                    amount_fiat=amount_fiat,
                    amount_crypto=amount_crypto,
                    trader_commission=commission,
                )
                for (order_type, fiat_id, crypto_id), (
                    n,
                    amount_fiat,
                    amount_crypto,
                    commission,
                ) in sorted(self.completed.items())
            ],
        )


def _grouped_statement(trader_ids: Sequence[int], period: Period) -> Select[*tuple[Any, ...]]:
    """Per trader, status, type and currency pair: counts and sums of the orders in `period`."""
    oh = OrderHistory
    return (
        select(
            oh.trader_id,
            oh.status,
            oh.order_type,
            oh.fiat_currency_id,
            oh.crypto_currency_id,
            func.count().label("n"),
            func.count(oh.disputed_at).label("disputes"),
            func.sum(oh.amount_fiat).label("amount_fiat"),
            func.sum(oh.amount_crypto).label("amount_crypto"),
            func.sum(oh.trader_commission).label("trader_commission"),
        )
        .where(
            oh.trader_id.in_(list(trader_ids)),
            oh.created_at >= period.date_from,
            oh.created_at < period.date_to,
        )
        .group_by(
            oh.trader_id, oh.status, oh.order_type, oh.fiat_currency_id, oh.crypto_currency_id
        )
    )


def _rollup_statement(
    trader_ids: Sequence[int], split: order_stats_rollup.Split
) -> Select[*tuple[Any, ...]]:
    """The groups of `_grouped_statement` from the rollup rows of the whole days and months."""
    r = OrderStatsTrader
    return (
        select(
            r.trader_id,
            r.status,
            r.order_type,
            r.fiat_currency_id,
            r.crypto_currency_id,
            func.sum(r.orders).cast(BigInteger).label("n"),
            func.sum(r.disputes).cast(BigInteger).label("disputes"),
            func.sum(r.amount_fiat).label("amount_fiat"),
            func.sum(r.amount_crypto).label("amount_crypto"),
            func.sum(r.trader_commission).label("trader_commission"),
        )
        .where(r.trader_id.in_(list(trader_ids)), order_stats_rollup.rollup_condition(r, split))
        .group_by(r.trader_id, r.status, r.order_type, r.fiat_currency_id, r.crypto_currency_id)
        .having(func.sum(r.orders) != 0)
    )


def grouped_statement(session: Session, trader_ids: Sequence[int], period: Period) -> Any:
    """One statement whose rows together are the traders' groups in `period`: a scan of the
    orders per partial day at its ends and a read of the rollup (settled first) for the rest,
    `UNION ALL`ed into one round trip."""
    split = order_stats_rollup.split_period(period.date_from, period.date_to)
    stmts = [_grouped_statement(trader_ids, Period(a, b)) for a, b in split.direct]
    if split.uses_rollup:
        order_stats_rollup.settle(session)
        stmts.append(_rollup_statement(trader_ids, split))
    return stmts[0] if len(stmts) == 1 else union_all(*stmts)


def _grouped(session: Session, trader_ids: Sequence[int], period: Period) -> Sequence[Any]:
    """The grouped rows of the traders' orders in `period` (none without traders); a group may
    come in several rows (partial days and rollup), which `_Acc.add` sums."""
    if not trader_ids:
        return []
    return session.execute(grouped_statement(session, trader_ids, period)).all()


def _codes(session: Session, rows: Iterable[Any]) -> tuple[dict[int, str], dict[int, str]]:
    rows = list(rows)
    # Codes never change: the per-process cache of reference_data saves two round trips a block.
    fiat = {
        r.fiat_currency_id: reference_data.currency_code(session, FiatCurrency, r.fiat_currency_id)
        or ""
        for r in rows
    }
    crypto = {
        r.crypto_currency_id: reference_data.currency_code(
            session, CryptoCurrency, r.crypto_currency_id
        )
        or ""
        for r in rows
    }
    return fiat, crypto


def _team(session: Session, principal: Principal) -> list[Any]:
    return list(
        session.execute(
            select(Trader.id, User.email, Trader.first_name, Trader.last_name)
            .join(User, User.id == Trader.user_id)
            .where(traders_visible_to(principal))
            .order_by(Trader.id)
        ).all()
    )


def _block(session: Session, trader_ids: Sequence[int], period: Period) -> OrderStatsBlock:
    rows = _grouped(session, trader_ids, period)
    acc = _Acc()
    for row in rows:
        acc.add(row)
    return acc.block(*_codes(session, rows))


def trader_stats(
    session: Session, *, principal: Principal, trader_id: int, period: Period
) -> TraderStatsRead:
    """Order statistics of one trader the caller may see (else not found) over `period`."""
    ensure_trader_visible(session, principal=principal, trader_id=trader_id)
    return TraderStatsRead(
        date_from=period.date_from,
        date_to=period.date_to,
        trader_id=trader_id,
        stats=_block(session, [trader_id], period),
    )


def team_order_stats(
    session: Session, *, principal: Principal, period: Period
) -> TeamOrderStatsRead:
    """Team totals and a per-trader breakdown of the orders created in `period`."""
    team = _team(session, principal)
    rows = _grouped(session, [t.id for t in team], period)
    fiat, crypto = _codes(session, rows)
    totals = _Acc()
    per_trader: dict[int, _Acc] = defaultdict(_Acc)
    for row in rows:
        totals.add(row)
        per_trader[row.trader_id].add(row)
    return TeamOrderStatsRead(
        date_from=period.date_from,
        date_to=period.date_to,
        totals=totals.block(fiat, crypto),
        traders=[
            TraderOrderStats(
                trader_id=t.id,
                email=t.email,
                first_name=t.first_name,
                last_name=t.last_name,
                stats=per_trader[t.id].block(fiat, crypto),
            )
            for t in team
        ],
    )


def team_summary(
    session: Session, *, principal: Principal, period: Period, now: datetime
) -> TeamSummaryRead:
    """Traders and requisites online now, and the team's orders today and over `period` when the
    caller may see the team's orders (the order routes' grant)."""
    scope = traders_visible_to(principal)
    traders = session.execute(
        select(
            func.count(),
            func.count().filter(User.is_active),
            func.count().filter(Trader.in_work),
            func.count().filter(Trader.is_traffic_enabled_by_teamlead),
        )
        .select_from(Trader)
        .join(User, User.id == Trader.user_id)
        .where(scope)
    ).one()
    base = (
        select()
        .select_from(ReqTrader)
        .join(FullRequisitesSettings, FullRequisitesSettings.requisite_id == ReqTrader.id)
        .join(Trader, Trader.id == ReqTrader.trader_id)
        .join(User, User.id == Trader.user_id)
        .where(scope, requisites_visible_to(principal), *online_conditions(None))
    )
    online = session.execute(
        base.add_columns(
            func.count(),
            func.count(distinct(ReqTrader.trader_id)),
            func.count().filter(and_(*online_conditions(OrderType.PAYIN))),
            func.count().filter(and_(*online_conditions(OrderType.PAYOUT))),
        )
    ).one()
    ids = [t.id for t in _team(session, principal)]
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    orders = check_permission(principal, Permission.ORDERS_VIEW_TEAM)
    return TeamSummaryRead(
        date_from=period.date_from,
        date_to=period.date_to,
        traders_total=traders[0],
        traders_active=traders[1],
        traders_in_work=traders[2],
        traders_traffic_enabled=traders[3],
        traders_online=online[1],
        requisites_online=online[0],
        requisites_online_pay_in=online[2],
        requisites_online_pay_out=online[3],
        today=_block(session, ids, Period(day_start, now)) if orders else None,
        period=_block(session, ids, period) if orders else None,
    )
