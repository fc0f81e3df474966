"""Staff read side of money: store and trader balances (balance, frozen, available) and their
history, and the platform's balance with its per-order profit and adjustments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    BalancePlatform,
    BalancePlatformHistory,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    CryptoCurrency,
    IncomingOrder,
    MerchantStore,
    Trader,
    User,
)
from jivapay.enums import (
    BalanceOperation,
)
from jivapay.schemas.staff import (
    AccountBalanceRead,
    BalanceHistoryRead,
    PlatformBalanceRead,
)
from jivapay.services.order_queries import check_range
from jivapay.utils.exceptions import NotFound

# --------------------------------------------------------------------------- balances


def _crypto_condition(code: str | None) -> list[ColumnElement[bool]]:
    return [] if code is None else [CryptoCurrency.code == code.upper()]


def _balance_page(
    session: Session,
    base: Select[Any, str, str],
    model: type[BalanceStore] | type[BalanceTrader],
    owner: str,
    *,
    limit: int,
    offset: int,
) -> tuple[list[AccountBalanceRead], int]:
    # `base` selects (balance row, account name, crypto code); `owner` names the row's account id.
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    page = base.order_by(getattr(model, owner), model.id).limit(limit).offset(offset)
    return [
        AccountBalanceRead(
            account_id=getattr(row, owner),
            account_name=name,
            crypto_currency=code,
            balance=row.balance,
            frozen=row.frozen,
            available=row.balance - row.frozen,
            updated_at=row.updated_at,
        )
        for row, name, code in session.execute(page).all()
    ], total


def list_store_balances(
    session: Session,
    *,
    store_id: int | None,
    merchant_id: int | None,
    crypto_currency: str | None,
    limit: int,
    offset: int,
) -> tuple[list[AccountBalanceRead], int]:
    """Store balances (balance, frozen, available) per store and crypto currency."""
    b = BalanceStore
    c = _crypto_condition(crypto_currency)
    if store_id is not None:
        c.append(b.store_id == store_id)
    if merchant_id is not None:
        c.append(MerchantStore.merchant_id == merchant_id)
    base = (
        select(b, MerchantStore.store_name, CryptoCurrency.code)
        .join(MerchantStore, MerchantStore.id == b.store_id)
        .join(CryptoCurrency, CryptoCurrency.id == b.crypto_currency_id)
        .where(*c)
    )
    return _balance_page(session, base, b, "store_id", limit=limit, offset=offset)


def list_trader_balances(
    session: Session,
    *,
    trader_id: int | None,
    crypto_currency: str | None,
    limit: int,
    offset: int,
) -> tuple[list[AccountBalanceRead], int]:
    """Trader deposits (balance, frozen, available) per trader and crypto currency."""
    b = BalanceTrader
    c = _crypto_condition(crypto_currency)
    if trader_id is not None:
        c.append(b.trader_id == trader_id)
    base = (
        select(b, User.email, CryptoCurrency.code)
        .join(Trader, Trader.id == b.trader_id)
        .join(User, User.id == Trader.user_id)
        .join(CryptoCurrency, CryptoCurrency.id == b.crypto_currency_id)
        .where(*c)
    )
    return _balance_page(session, base, b, "trader_id", limit=limit, offset=offset)


@dataclass(frozen=True)
class HistorySearch:
    operation: BalanceOperation | None = None
    crypto_currency: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _history(
    session: Session,
    *,
    history: Any,
    balance: Any,
    link: ColumnElement[bool],
    owner: ColumnElement[bool] | None,
    search: HistorySearch,
    limit: int,
    offset: int,
) -> tuple[list[BalanceHistoryRead], int]:
    check_range(search.created_from, search.created_to, "created")
    c: list[ColumnElement[bool]] = [] if owner is None else [owner]
    c += _crypto_condition(search.crypto_currency)
    if search.operation is not None:
        c.append(history.operation == search.operation.value)
    if search.created_from is not None:
        c.append(history.created_at >= search.created_from)
    if search.created_to is not None:
        c.append(history.created_at < search.created_to)
    base = (
        select(history, IncomingOrder.public_id)
        .join(balance, link)
        .join(CryptoCurrency, CryptoCurrency.id == balance.crypto_currency_id)
        .outerjoin(IncomingOrder, IncomingOrder.id == history.incoming_order_id)
        .where(*c)
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(history.created_at.desc(), history.id.desc()).limit(limit).offset(offset)
    ).all()
    return [
        BalanceHistoryRead(
            id=row.id,
            operation=row.operation,
            amount=row.amount,
            frozen_delta=getattr(row, "frozen_delta", None),
            balance_after=row.balance_after,
            frozen_after=getattr(row, "frozen_after", None),
            order_id=public_id,
            actor_user_id=row.actor_user_id,
            reason=row.reason,
            created_at=row.created_at,
        )
        for row, public_id in rows
    ], total


def store_balance_history(
    session: Session, *, store_id: int, search: HistorySearch, limit: int, offset: int
) -> tuple[list[BalanceHistoryRead], int]:
    """A store's balance history, newest first (404 for an unknown store)."""
    if session.get(MerchantStore, store_id) is None:
        raise NotFound("store not found", code="store_not_found")
    return _history(
        session,
        history=BalanceStoreHistory,
        balance=BalanceStore,
        link=BalanceStore.id == BalanceStoreHistory.balance_store_id,
        owner=BalanceStore.store_id == store_id,
        search=search,
        limit=limit,
        offset=offset,
    )


def trader_balance_history(
    session: Session, *, trader_id: int, search: HistorySearch, limit: int, offset: int
) -> tuple[list[BalanceHistoryRead], int]:
    """A trader's deposit history, newest first (404 for an unknown trader)."""
    if session.get(Trader, trader_id) is None:
        raise NotFound("trader not found", code="trader_not_found")
    return _history(
        session,
        history=BalanceTraderCryptoHistory,
        balance=BalanceTrader,
        link=BalanceTrader.id == BalanceTraderCryptoHistory.balance_trader_id,
        owner=BalanceTrader.trader_id == trader_id,
        search=search,
        limit=limit,
        offset=offset,
    )


def platform_balance_history(
    session: Session, *, search: HistorySearch, limit: int, offset: int
) -> tuple[list[BalanceHistoryRead], int]:
    """The platform's profit per order and its adjustments, newest first."""
    return _history(
        session,
        history=BalancePlatformHistory,
        balance=BalancePlatform,
        link=BalancePlatform.id == BalancePlatformHistory.balance_platform_id,
        owner=None,
        search=search,
        limit=limit,
        offset=offset,
    )


def platform_balances(session: Session) -> list[PlatformBalanceRead]:
    """The platform's balance per crypto currency with its profit and adjustment totals."""
    h = BalancePlatformHistory
    totals = (
        select(
            h.balance_platform_id.label("bid"),
            func.coalesce(
                func.sum(case((h.operation == BalanceOperation.COMMISSION.value, h.amount))), 0
            ).label("profit"),
            func.coalesce(
                func.sum(case((h.operation != BalanceOperation.COMMISSION.value, h.amount))), 0
            ).label("manual"),
        )
        .group_by(h.balance_platform_id)
        .subquery()
    )
    rows = session.execute(
        select(BalancePlatform, CryptoCurrency.code, totals.c.profit, totals.c.manual)
        .join(CryptoCurrency, CryptoCurrency.id == BalancePlatform.crypto_currency_id)
        .outerjoin(totals, totals.c.bid == BalancePlatform.id)
        .order_by(CryptoCurrency.code)
    ).all()
    return [
        PlatformBalanceRead(
            crypto_currency=code,
            balance=row.balance,
            profit_total=profit or Decimal(0),
            adjustments_total=manual or Decimal(0),
            updated_at=row.updated_at,
        )
        for row, code, profit, manual in rows
    ]
