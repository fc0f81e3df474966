"""Online-requisite statistics: which requisites the selector would consider right now (the shared
`online_filter`), with their limits, today's turnover, open orders and last use, and a summary.

Scoped by `query_filters.requisites_visible_to`: a teamlead sees the own team's requisites (grant
`requisites:view:team`), staff every trader's (`requisites:view:all`). Numbers are masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Date, and_, cast, distinct, func, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    Bank,
    FiatCurrency,
    FullRequisitesSettings,
    PaymentMethod,
    ReqTrader,
    RequisiteDailyTurnover,
    TimeZone,
    Trader,
    User,
)
from jivapay.database.types import mask_number
from jivapay.enums import OnlineStatsSort, OrderType
from jivapay.schemas.team import OnlineRequisiteRead, OnlineStatsRead, OnlineSummary
from jivapay.security import Principal
from jivapay.services.online_filter import online_conditions
from jivapay.utils.exceptions import ValidationFailed
from jivapay.utils.query_filters import requisites_visible_to


@dataclass(frozen=True)
class OnlineFilters:
    payment_method: str | None = None
    bank: str | None = None
    fiat_currency: str | None = None
    direction: OrderType | None = None
    trader_id: int | None = None


_ORDERINGS: dict[OnlineStatsSort, tuple[Any, ...]] = {
    # The selector's own order: priority, then least recently used first.
    OnlineStatsSort.PRIORITY: (
        ReqTrader.distribution_weight,
        ReqTrader.last_used_at.asc().nulls_first(),
        ReqTrader.id,
    ),
    OnlineStatsSort.PRIORITY_DESC: (
        ReqTrader.distribution_weight.desc(),
        ReqTrader.last_used_at.desc().nulls_last(),
        ReqTrader.id.desc(),
    ),
    OnlineStatsSort.LAST_USED: (ReqTrader.last_used_at.asc().nulls_first(), ReqTrader.id),
    OnlineStatsSort.LAST_USED_DESC: (
        ReqTrader.last_used_at.desc().nulls_last(),
        ReqTrader.id.desc(),
    ),
    OnlineStatsSort.LIMITS: (
        FullRequisitesSettings.upper_limit,
        FullRequisitesSettings.lower_limit,
        ReqTrader.id,
    ),
    OnlineStatsSort.LIMITS_DESC: (
        FullRequisitesSettings.upper_limit.desc(),
        FullRequisitesSettings.lower_limit.desc(),
        ReqTrader.id.desc(),
    ),
}


def _code_id(session: Session, model: Any, code: str | None, label: str) -> int | None:
    if code is None:
        return None
    found = session.scalar(select(model.id).where(model.code == code))
    if found is None:
        raise ValidationFailed(f"unknown {label} {code!r}")
    return int(found)


def _conditions(session: Session, principal: Principal, filters: OnlineFilters) -> list[Any]:
    conditions: list[Any] = [
        *online_conditions(filters.direction),
        requisites_visible_to(principal),
    ]
    method_id = _code_id(session, PaymentMethod, filters.payment_method, "payment method")
    bank_id = _code_id(session, Bank, filters.bank, "bank")
    fiat_id = _code_id(session, FiatCurrency, filters.fiat_currency, "fiat currency")
    if method_id is not None:
        conditions.append(ReqTrader.payment_method_id == method_id)
    if bank_id is not None:
        conditions.append(ReqTrader.bank_id == bank_id)
    if fiat_id is not None:
        conditions.append(ReqTrader.fiat_currency_id == fiat_id)
    if filters.trader_id is not None:
        conditions.append(ReqTrader.trader_id == filters.trader_id)
    return conditions


def _online_from(stmt: Any) -> Any:
    return (
        stmt.select_from(ReqTrader)
        .join(FullRequisitesSettings, FullRequisitesSettings.requisite_id == ReqTrader.id)
        .join(Trader, Trader.id == ReqTrader.trader_id)
        .join(User, User.id == Trader.user_id)
    )


def online_requisites(
    session: Session,
    *,
    principal: Principal,
    filters: OnlineFilters,
    sort: OnlineStatsSort,
    limit: int,
    offset: int,
    now: datetime,
) -> OnlineStatsRead:
    """The online requisites the caller may see, sorted and paged, with a summary of all of them."""
    conditions = _conditions(session, principal, filters)
    payin_on = and_(*online_conditions(OrderType.PAYIN))
    payout_on = and_(*online_conditions(OrderType.PAYOUT))
    summary_row = session.execute(
        _online_from(
            select(
                func.count(),
                func.count(distinct(ReqTrader.trader_id)),
                func.count().filter(payin_on),
                func.count().filter(payout_on),
            )
        ).where(*conditions)
    ).one()
    summary = OnlineSummary(
        requisites=summary_row[0],
        traders=summary_row[1],
        pay_in=summary_row[2],
        pay_out=summary_row[3],
    )
    # Today in the trader's time zone, as the selector counts the daily limit.
    local_day = cast(
        func.timezone("UTC", now)
        + func.make_interval(0, 0, 0, 0, 0, func.coalesce(TimeZone.utc_offset_minutes, 0)),
        Date,
    )
    rows = session.execute(
        _online_from(
            select(
                ReqTrader,
                FullRequisitesSettings,
                User.email,
                FiatCurrency.code.label("fiat"),
                PaymentMethod.code.label("method"),
                Bank.code.label("bank"),
                payin_on.label("online_pay_in"),
                payout_on.label("online_pay_out"),
                func.coalesce(RequisiteDailyTurnover.amount_fiat, 0).label("turnover_today"),
            )
        )
        .join(FiatCurrency, FiatCurrency.id == ReqTrader.fiat_currency_id)
        .join(PaymentMethod, PaymentMethod.id == ReqTrader.payment_method_id)
        .join(Bank, Bank.id == ReqTrader.bank_id)
        .outerjoin(TimeZone, TimeZone.id == Trader.time_zone_id)
        .outerjoin(
            RequisiteDailyTurnover,
            and_(
                RequisiteDailyTurnover.requisite_id == ReqTrader.id,
                RequisiteDailyTurnover.day == local_day,
            ),
        )
        .where(*conditions)
        .order_by(*_ORDERINGS[sort])
        .limit(limit)
        .offset(offset)
    ).all()
    items = [
        OnlineRequisiteRead(
            requisite_id=row.ReqTrader.id,
            trader_id=row.ReqTrader.trader_id,
            trader_email=row.email,
            fiat_currency=row.fiat,
            payment_method=row.method,
            bank=row.bank,
            number_masked=mask_number(row.ReqTrader.req_last4) or "",
            online_pay_in=bool(row.online_pay_in),
            online_pay_out=bool(row.online_pay_out),
            priority=row.ReqTrader.distribution_weight,
            lower_limit=row.FullRequisitesSettings.lower_limit,
            upper_limit=row.FullRequisitesSettings.upper_limit,
            total_limit=row.FullRequisitesSettings.total_limit,
            turnover_day_max=row.FullRequisitesSettings.turnover_day_max,
            turnover_today=row.turnover_today,
            open_orders=row.ReqTrader.open_orders,
            max_concurrent_orders=row.FullRequisitesSettings.max_concurrent_orders,
            last_used_at=row.ReqTrader.last_used_at,
        )
        for row in rows
    ]
    return OnlineStatsRead(
        items=items, total=summary.requisites, limit=limit, offset=offset, summary=summary
    )
