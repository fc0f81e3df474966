"""A trader's account as the trader (and staff) see it: deposits and fiat turnover with their
history, the profile (the trader edits names and time zone only) and the own-password change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    BalanceTrader,
    BalanceTraderCryptoHistory,
    BalanceTraderFiat,
    BalanceTraderFiatHistory,
    CryptoCurrency,
    FiatCurrency,
    OrderHistory,
    TeamLead,
    TimeZone,
    Trader,
    TraderCommission,
    User,
)
from jivapay.enums import BalanceKind, BalanceOperation
from jivapay.schemas.traders import (
    BalanceHistoryRead,
    CommissionRead,
    DepositRead,
    FiatTurnoverRead,
    TeamRead,
    TraderBalancesRead,
    TraderProfileRead,
    TraderProfileUpdate,
)
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import NotFound, ValidationFailed


@dataclass(frozen=True)
class HistoryFilters:
    kind: BalanceKind = BalanceKind.CRYPTO
    currency: str | None = None
    operation: BalanceOperation | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def balances(session: Session, *, trader_id: int) -> TraderBalancesRead:
    """The trader's deposit per crypto (balance, frozen, available) and fiat turnover per fiat."""
    deposits = session.execute(
        select(BalanceTrader, CryptoCurrency.code)
        .join(CryptoCurrency, CryptoCurrency.id == BalanceTrader.crypto_currency_id)
        .where(BalanceTrader.trader_id == trader_id)
        .order_by(CryptoCurrency.code)
    ).all()
    fiat = session.execute(
        select(BalanceTraderFiat, FiatCurrency.code)
        .join(FiatCurrency, FiatCurrency.id == BalanceTraderFiat.fiat_currency_id)
        .where(BalanceTraderFiat.trader_id == trader_id)
        .order_by(FiatCurrency.code)
    ).all()
    return TraderBalancesRead(
        deposits=[
            DepositRead(
                crypto_currency=code,
                balance=row.balance,
                frozen=row.frozen,
                available=row.balance - row.frozen,
            )
            for row, code in deposits
        ],
        fiat=[FiatTurnoverRead(fiat_currency=code, balance=row.balance) for row, code in fiat],
    )


def balance_history(
    session: Session, *, trader_id: int, filters: HistoryFilters, limit: int, offset: int
) -> tuple[list[BalanceHistoryRead], int]:
    """History rows of the trader's deposits or fiat turnover, newest first, with the total."""
    h: Any
    account: Any
    currency: Any
    if filters.kind == BalanceKind.CRYPTO:
        h, account, currency = BalanceTraderCryptoHistory, BalanceTrader, CryptoCurrency
        join_account = account.id == h.balance_trader_id
        join_currency = currency.id == account.crypto_currency_id
    else:
        h, account, currency = BalanceTraderFiatHistory, BalanceTraderFiat, FiatCurrency
        join_account = account.id == h.balance_trader_fiat_id
        join_currency = currency.id == account.fiat_currency_id
    conditions: list[Any] = [account.trader_id == trader_id]
    if filters.currency is not None:
        conditions.append(currency.code == filters.currency.upper())
    if filters.operation is not None:
        conditions.append(h.operation == filters.operation.value)
    if filters.created_from is not None:
        conditions.append(h.created_at >= filters.created_from)
    if filters.created_to is not None:
        conditions.append(h.created_at < filters.created_to)
    base = (
        select(h, currency.code, OrderHistory.public_id)
        .join(account, join_account)
        .join(currency, join_currency)
        .outerjoin(OrderHistory, OrderHistory.id == h.order_id)
        .where(*conditions)
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(h.created_at.desc(), h.id.desc()).limit(limit).offset(offset)
    ).all()
    crypto = filters.kind == BalanceKind.CRYPTO
    return [
        BalanceHistoryRead(
            id=row.id,
            kind=filters.kind,
            currency=code,
            operation=BalanceOperation(row.operation),
            amount=row.amount,
            frozen_delta=row.frozen_delta if crypto else None,
            balance_after=row.balance_after,
            frozen_after=row.frozen_after if crypto else None,
            order_id=public_id,
            reason=row.reason,
            created_at=row.created_at,
        )
        for row, code, public_id in rows
    ], total


def commission_history(session: Session, *, trader_id: int) -> list[CommissionRead]:
    """The trader's commission rows, newest (the one that applies) first."""
    rows = session.scalars(
        select(TraderCommission)
        .where(TraderCommission.trader_id == trader_id)
        .order_by(TraderCommission.created_at.desc(), TraderCommission.id.desc())
    ).all()
    return [CommissionRead.model_validate(r, from_attributes=True) for r in rows]


def profile(session: Session, *, trader_id: int) -> TraderProfileRead:
    """The trader's profile with team and current commission."""
    row = session.execute(
        select(Trader, User, TimeZone.name)
        .join(User, User.id == Trader.user_id)
        .outerjoin(TimeZone, TimeZone.id == Trader.time_zone_id)
        .where(Trader.id == trader_id)
    ).first()
    if row is None:
        raise NotFound("trader not found")
    trader, user, tz_name = row
    team = None
    if trader.team_lead_id is not None:
        lead = session.get(TeamLead, trader.team_lead_id)
        name = " ".join(p for p in (lead.first_name, lead.last_name) if p) if lead else None
        team = TeamRead(teamlead_id=trader.team_lead_id, name=name or None)
    history = commission_history(session, trader_id=trader_id)
    return TraderProfileRead(
        id=trader.id,
        user_id=user.id,
        email=user.email,
        is_active=user.is_active,
        first_name=trader.first_name,
        last_name=trader.last_name,
        time_zone=tz_name,
        pay_in=trader.pay_in,
        pay_out=trader.pay_out,
        in_work=trader.in_work,
        is_traffic_enabled_by_teamlead=trader.is_traffic_enabled_by_teamlead,
        trafic_priority=trader.trafic_priority,
        base_lower_limit=trader.base_lower_limit,
        base_upper_limit=trader.base_upper_limit,
        verification_level=trader.verification_level,
        team=team,
        commission=history[0] if history else None,
        created_at=trader.created_at,
    )


def time_zone_id(session: Session, name: str | None) -> int | None:
    """The id of the time zone called `name` (None for None); `ValidationFailed` if unknown."""
    if name is None:
        return None
    tz_id = session.scalar(select(TimeZone.id).where(TimeZone.name == name))
    if tz_id is None:
        raise ValidationFailed(f"unknown time zone {name!r}", code="unknown_time_zone")
    return tz_id


def update_profile(
    session: Session,
    *,
    trader_id: int,
    changes: TraderProfileUpdate,
    actor_user_id: int,
    ip_address: str | None,
) -> bool:
    """Change the trader's names and time zone (only the fields sent); True if anything changed."""
    trader = session.get(Trader, trader_id, with_for_update=True)
    if trader is None:
        raise NotFound("trader not found")
    sent = changes.model_dump(include=changes.model_fields_set)
    for name in ("first_name", "last_name"):
        if name in sent and sent[name] is None:
            raise ValidationFailed(f"{name} cannot be null")
    if "time_zone" in sent:
        sent["time_zone_id"] = time_zone_id(session, sent.pop("time_zone"))
    diff = {
        k: {"from": getattr(trader, k), "to": v} for k, v in sent.items() if getattr(trader, k) != v
    }
    if not diff:
        return False
    for name, change in diff.items():
        setattr(trader, name, change["to"])
    log_event(
        session,
        action="trader.profile_changed",
        user_id=actor_user_id,
        target_entity="trader",
        target_id=trader.id,
        details={"changes": diff},
        ip_address=ip_address,
    )
    session.flush()
    return True
