"""Online-requisite statistics: which requisites the selector would consider right now (the shared
`online_filter`), with their limits, today's turnover, open orders and last use, and a summary.

Scoped by `query_filters.requisites_visible_to`: a teamlead sees the own team's requisites (grant
`requisites:view:team`), staff every trader's (`requisites:view:all`). Numbers are masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, distinct, func, select
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
from jivapay.services.requisite_selector import turnover_slots
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


def _codes(session: Session, model: Any, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {
        row.id: row.code
        for row in session.execute(select(model.id, model.code).where(model.id.in_(ids)))
    }


def _turnover_today(session: Session, rows: Sequence[Any], now: datetime) -> dict[int, Decimal]:
    """Each requisite's fiat turnover today in its trader's time zone (the selector's day)."""
    zones = {row.time_zone_id for row in rows if row.time_zone_id is not None}
    names = {
        tz.id: tz.name
        for tz in session.execute(select(TimeZone.id, TimeZone.name).where(TimeZone.id.in_(zones)))
    }
    days = {row.ReqTrader.id: turnover_slots(now, names.get(row.time_zone_id))[1] for row in rows}
    if not days:
        return {}
    found = session.execute(
        select(
            RequisiteDailyTurnover.requisite_id,
            RequisiteDailyTurnover.day,
            RequisiteDailyTurnover.amount_fiat,
        )
        .where(RequisiteDailyTurnover.requisite_id.in_(list(days)))
        .where(RequisiteDailyTurnover.day.in_(set(days.values())))
    )
    return {r.requisite_id: r.amount_fiat for r in found if days[r.requisite_id] == r.day}


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
    # Four tables only: joining the reference tables and the turnover here too costs the planner
    # far more than the two small look-ups below.
    rows = session.execute(
        _online_from(
            select(
                ReqTrader,
                FullRequisitesSettings,
                User.email,
                Trader.time_zone_id,
                payin_on.label("online_pay_in"),
                payout_on.label("online_pay_out"),
            )
        )
        .where(*conditions)
        .order_by(*_ORDERINGS[sort])
        .limit(limit)
        .offset(offset)
    ).all()
    fiat = _codes(session, FiatCurrency, {row.ReqTrader.fiat_currency_id for row in rows})
    method = _codes(session, PaymentMethod, {row.ReqTrader.payment_method_id for row in rows})
    bank = _codes(session, Bank, {row.ReqTrader.bank_id for row in rows})
    today = _turnover_today(session, rows, now)
    items = [
        OnlineRequisiteRead(
            requisite_id=row.ReqTrader.id,
            trader_id=row.ReqTrader.trader_id,
            trader_email=row.email,
            fiat_currency=fiat[row.ReqTrader.fiat_currency_id],
            payment_method=method[row.ReqTrader.payment_method_id],
            bank=bank[row.ReqTrader.bank_id],
            number_masked=mask_number(row.ReqTrader.req_last4) or "",
            online_pay_in=bool(row.online_pay_in),
            online_pay_out=bool(row.online_pay_out),
            priority=row.ReqTrader.distribution_weight,
            lower_limit=row.FullRequisitesSettings.lower_limit,
            upper_limit=row.FullRequisitesSettings.upper_limit,
            total_limit=row.FullRequisitesSettings.total_limit,
            turnover_day_max=row.FullRequisitesSettings.turnover_day_max,
            turnover_today=today.get(row.ReqTrader.id, Decimal(0)),
            open_orders=row.ReqTrader.open_orders,
            max_concurrent_orders=row.FullRequisitesSettings.max_concurrent_orders,
            last_used_at=row.ReqTrader.last_used_at,
        )
        for row in rows
    ]
    return OnlineStatsRead(
        items=items, total=summary.requisites, limit=limit, offset=offset, summary=summary
    )
