"""A teamlead's team: its traders (with their requisites, numbers masked), the teamlead's traffic
switch and the team's deposits.

Every read is scoped by `utils.query_filters` (a trader outside the caller's team is not found).
The traffic switch sets `traders.is_traffic_enabled_by_teamlead`, which the shared online filter
ANDs with the trader's own `in_work`: switching traffic off stops assignment from the next
selection on, whatever the trader's work switch says, and switching it on lets it resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, true
from sqlalchemy.orm import Session

from jivapay.database.models import (
    BalanceTrader,
    Bank,
    CryptoCurrency,
    FiatCurrency,
    FullRequisitesSettings,
    PaymentMethod,
    ReqTrader,
    Trader,
    User,
)
from jivapay.database.types import mask_number
from jivapay.enums import OrderType, RequisiteStatus, Role
from jivapay.permissions import Permission, ensure_permission
from jivapay.schemas.team import (
    DepositRead,
    TeamBalancesRead,
    TeamRequisiteRead,
    TeamTraderDetail,
    TeamTraderRead,
    TraderDepositRead,
    TrafficState,
)
from jivapay.security import Principal
from jivapay.services.audit_logger import log_event
from jivapay.services.online_filter import online_conditions
from jivapay.utils.exceptions import NotFound
from jivapay.utils.query_filters import (
    requisites_visible_to,
    trader_balances_visible_to,
    traders_visible_to,
)


@dataclass(frozen=True)
class TraderFilters:
    in_work: bool | None = None
    traffic_enabled: bool | None = None
    search: str | None = None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _trader_columns() -> tuple[Any, ...]:
    """The trader row, its user's email and activity, and per-trader requisite counts."""
    live = ReqTrader.status != RequisiteStatus.ARCHIVED.value
    requisites_total = (
        select(func.count())
        .select_from(ReqTrader)
        .where(ReqTrader.trader_id == Trader.id, live)
        .scalar_subquery()
    )
    requisites_online = (
        select(func.count())
        .select_from(ReqTrader)
        .join(FullRequisitesSettings, FullRequisitesSettings.requisite_id == ReqTrader.id)
        .where(ReqTrader.trader_id == Trader.id, *online_conditions(None))
        .correlate(Trader, User)
        .scalar_subquery()
    )
    open_orders = (
        select(func.coalesce(func.sum(ReqTrader.open_orders), 0))
        .where(ReqTrader.trader_id == Trader.id)
        .scalar_subquery()
    )
    return (
        Trader,
        User.email,
        User.is_active,
        requisites_total.label("requisites_total"),
        requisites_online.label("requisites_online"),
        open_orders.label("open_orders"),
    )


def _trader_read(row: Any) -> dict[str, Any]:
    trader: Trader = row.Trader
    return {
        "id": trader.id,
        "user_id": trader.user_id,
        "email": row.email,
        "first_name": trader.first_name,
        "last_name": trader.last_name,
        "is_active": row.is_active,
        "in_work": trader.in_work,
        "is_traffic_enabled_by_teamlead": trader.is_traffic_enabled_by_teamlead,
        "pay_in": trader.pay_in,
        "pay_out": trader.pay_out,
        "trafic_priority": trader.trafic_priority,
        "base_lower_limit": trader.base_lower_limit,
        "base_upper_limit": trader.base_upper_limit,
        "requisites_total": row.requisites_total,
        "requisites_online": row.requisites_online,
        "open_orders": row.open_orders,
        "online": row.requisites_online > 0,
    }


def list_traders(
    session: Session, *, principal: Principal, filters: TraderFilters, limit: int, offset: int
) -> tuple[list[TeamTraderRead], int]:
    """The traders the caller may see (a teamlead: the own team), by id, with the total count."""
    conditions: list[Any] = [traders_visible_to(principal)]
    if filters.in_work is not None:
        conditions.append(Trader.in_work.is_(filters.in_work))
    if filters.traffic_enabled is not None:
        conditions.append(Trader.is_traffic_enabled_by_teamlead.is_(filters.traffic_enabled))
    if filters.search:
        pattern = _like(filters.search)
        conditions.append(
            or_(
                User.email.ilike(pattern, escape="\\"),
                Trader.first_name.ilike(pattern, escape="\\"),
                Trader.last_name.ilike(pattern, escape="\\"),
            )
        )
    base = select(Trader).join(User, User.id == Trader.user_id).where(*conditions)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        select(*_trader_columns())
        .join(User, User.id == Trader.user_id)
        .where(*conditions)
        .order_by(Trader.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return [TeamTraderRead(**_trader_read(row)) for row in rows], total


def _requisites(session: Session, *, principal: Principal, trader_id: int) -> list[Any]:
    """The trader's requisites the caller may see, masked, with their online flags."""
    rows = session.execute(
        select(
            ReqTrader,
            FullRequisitesSettings,
            FiatCurrency.code.label("fiat"),
            PaymentMethod.code.label("method"),
            Bank.code.label("bank"),
            and_(*online_conditions(OrderType.PAYIN)).label("online_pay_in"),
            and_(*online_conditions(OrderType.PAYOUT)).label("online_pay_out"),
        )
        .join(FullRequisitesSettings, FullRequisitesSettings.requisite_id == ReqTrader.id)
        .join(Trader, Trader.id == ReqTrader.trader_id)
        .join(User, User.id == Trader.user_id)
        .join(FiatCurrency, FiatCurrency.id == ReqTrader.fiat_currency_id)
        .join(PaymentMethod, PaymentMethod.id == ReqTrader.payment_method_id)
        .join(Bank, Bank.id == ReqTrader.bank_id)
        .where(ReqTrader.trader_id == trader_id, requisites_visible_to(principal))
        .order_by(ReqTrader.id)
    ).all()
    return [
        TeamRequisiteRead(
            id=row.ReqTrader.id,
            fiat_currency=row.fiat,
            payment_method=row.method,
            bank=row.bank,
            number_masked=mask_number(row.ReqTrader.req_last4) or "",
            status=RequisiteStatus(row.ReqTrader.status),
            pay_in=row.FullRequisitesSettings.pay_in,
            pay_out=row.FullRequisitesSettings.pay_out,
            lower_limit=row.FullRequisitesSettings.lower_limit,
            upper_limit=row.FullRequisitesSettings.upper_limit,
            total_limit=row.FullRequisitesSettings.total_limit,
            turnover_limit_minutes=row.FullRequisitesSettings.turnover_limit_minutes,
            turnover_day_max=row.FullRequisitesSettings.turnover_day_max,
            max_concurrent_orders=row.FullRequisitesSettings.max_concurrent_orders,
            open_orders=row.ReqTrader.open_orders,
            last_used_at=row.ReqTrader.last_used_at,
            is_excluded_from_distribution=row.ReqTrader.is_excluded_from_distribution,
            online_pay_in=bool(row.online_pay_in),
            online_pay_out=bool(row.online_pay_out),
        )
        for row in rows
    ]


def get_trader(session: Session, *, principal: Principal, trader_id: int) -> TeamTraderDetail:
    """One trader the caller may see, with the requisites it may see; anything else not found."""
    row = session.execute(
        select(*_trader_columns())
        .join(User, User.id == Trader.user_id)
        .where(Trader.id == trader_id, traders_visible_to(principal))
    ).first()
    if row is None:
        raise NotFound("trader not found")
    return TeamTraderDetail(
        **_trader_read(row),
        requisites=_requisites(session, principal=principal, trader_id=trader_id),
    )


def ensure_trader_visible(session: Session, *, principal: Principal, trader_id: int) -> None:
    """Raise `NotFound` unless the caller may see trader `trader_id`."""
    found = session.scalar(
        select(Trader.id).where(Trader.id == trader_id, traders_visible_to(principal))
    )
    if found is None:
        raise NotFound("trader not found")


def set_traffic(
    session: Session,
    *,
    principal: Principal,
    trader_id: int,
    enabled: bool,
    ip_address: str | None,
) -> TrafficState:
    """Switch a trader's traffic (the teamlead switch) on or off; audited; `changed` on a change."""
    if principal.role == Role.TEAMLEAD:
        ensure_permission(principal, Permission.TRADERS_TRAFFIC_TEAM)
        scope = Trader.team_lead_id == principal.profile_id
    else:
        ensure_permission(principal, Permission.TRADERS_TRAFFIC_ALL)
        scope = true()
    trader = session.scalars(
        select(Trader).where(Trader.id == trader_id, scope).with_for_update()
    ).first()
    if trader is None:
        raise NotFound("trader not found")
    previous = trader.is_traffic_enabled_by_teamlead
    changed = previous != enabled
    if changed:
        trader.is_traffic_enabled_by_teamlead = enabled
        log_event(
            session,
            action="trader.traffic_changed",
            user_id=principal.user_id,
            target_entity="trader",
            target_id=trader.id,
            details={
                "is_traffic_enabled_by_teamlead": {"old": previous, "new": enabled},
                "by_role": principal.role.value,
            },
            ip_address=ip_address,
        )
        session.flush()
    return TrafficState(
        trader_id=trader.id,
        is_traffic_enabled_by_teamlead=trader.is_traffic_enabled_by_teamlead,
        in_work=trader.in_work,
        changed=changed,
    )


def team_balances(
    session: Session, *, principal: Principal, limit: int, offset: int
) -> TeamBalancesRead:
    """The deposits of the traders whose balances the caller may see, with per-crypto totals."""
    conditions = [trader_balances_visible_to(principal)]
    joined = (
        select()
        .select_from(BalanceTrader)
        .join(Trader, Trader.id == BalanceTrader.trader_id)
        .join(User, User.id == Trader.user_id)
        .join(CryptoCurrency, CryptoCurrency.id == BalanceTrader.crypto_currency_id)
        .where(*conditions)
    )
    total = session.scalar(joined.add_columns(func.count())) or 0
    rows = session.execute(
        joined.add_columns(BalanceTrader, User.email, CryptoCurrency.code.label("crypto"))
        .order_by(BalanceTrader.trader_id, CryptoCurrency.code)
        .limit(limit)
        .offset(offset)
    ).all()
    sums = session.execute(
        joined.add_columns(
            CryptoCurrency.code,
            func.sum(BalanceTrader.balance),
            func.sum(BalanceTrader.frozen),
        )
        .group_by(CryptoCurrency.code)
        .order_by(CryptoCurrency.code)
    ).all()
    items = [
        TraderDepositRead(
            trader_id=row.BalanceTrader.trader_id,
            email=row.email,
            crypto_currency=row.crypto,
            balance=row.BalanceTrader.balance,
            frozen=row.BalanceTrader.frozen,
            available=row.BalanceTrader.balance - row.BalanceTrader.frozen,
        )
        for row in rows
    ]
    totals = [
        DepositRead(crypto_currency=code, balance=bal, frozen=frz, available=bal - frz)
        for code, bal, frz in sums
    ]
    return TeamBalancesRead(items=items, total=total, limit=limit, offset=offset, totals=totals)
