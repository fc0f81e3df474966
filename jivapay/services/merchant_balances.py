"""Reading a merchant's money: the balance of each own store per crypto (balance, frozen,
available) and the store balance history, newest first. Read-only: balances change only through
`balance_manager`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    BalanceStore,
    BalanceStoreHistory,
    CryptoCurrency,
    IncomingOrder,
    MerchantStore,
)
from jivapay.enums import BalanceOperation
from jivapay.schemas.merchant import StoreBalanceHistoryRead, StoreBalanceRead
from jivapay.security import Principal
from jivapay.services import reference_data
from jivapay.utils.query_filters import stores_visible_to

_ZERO = Decimal("0")


@dataclass(frozen=True)
class HistoryFilters:
    store_id: int | None = None
    operation: BalanceOperation | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _crypto(session: Session, crypto_id: int) -> str:
    return reference_data.currency_code(session, CryptoCurrency, crypto_id) or ""


def list_balances(
    session: Session, *, principal: Principal, limit: int, offset: int
) -> tuple[list[StoreBalanceRead], int]:
    """Each visible store's balance per crypto; a store that never moved money shows zeros."""
    stmt = (
        select(MerchantStore, BalanceStore)
        .outerjoin(BalanceStore, BalanceStore.store_id == MerchantStore.id)
        .where(stores_visible_to(principal))
    )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(MerchantStore.id, BalanceStore.crypto_currency_id).limit(limit).offset(offset)
    ).all()
    items = []
    for store, row in rows:
        balance = row.balance if row is not None else _ZERO
        frozen = row.frozen if row is not None else _ZERO
        crypto_id = row.crypto_currency_id if row is not None else store.crypto_currency_id
        items.append(
            StoreBalanceRead(
                store_id=store.id,
                store_name=store.store_name,
                crypto_currency=_crypto(session, crypto_id),
                balance=balance,
                frozen=frozen,
                available=balance - frozen,
            )
        )
    return items, total


def list_history(
    session: Session, *, principal: Principal, filters: HistoryFilters, limit: int, offset: int
) -> tuple[list[StoreBalanceHistoryRead], int]:
    """The visible stores' balance history rows, newest first."""
    conditions = [stores_visible_to(principal)]
    if filters.store_id is not None:
        conditions.append(MerchantStore.id == filters.store_id)
    if filters.operation is not None:
        conditions.append(BalanceStoreHistory.operation == filters.operation.value)
    if filters.created_from is not None:
        conditions.append(BalanceStoreHistory.created_at >= filters.created_from)
    if filters.created_to is not None:
        conditions.append(BalanceStoreHistory.created_at < filters.created_to)
    base = (
        select(BalanceStoreHistory, BalanceStore, IncomingOrder.public_id)
        .join(BalanceStore, BalanceStore.id == BalanceStoreHistory.balance_store_id)
        .join(MerchantStore, MerchantStore.id == BalanceStore.store_id)
        .outerjoin(IncomingOrder, IncomingOrder.id == BalanceStoreHistory.incoming_order_id)
        .where(and_(*conditions))
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(BalanceStoreHistory.created_at.desc(), BalanceStoreHistory.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [
        StoreBalanceHistoryRead(
            id=h.id,
            store_id=account.store_id,
            crypto_currency=_crypto(session, account.crypto_currency_id),
            operation=BalanceOperation(h.operation),
            amount=h.amount,
            frozen_delta=h.frozen_delta,
            balance_after=h.balance_after,
            frozen_after=h.frozen_after,
            order_id=public_id,
            reason=h.reason,
            created_at=h.created_at,
        )
        for h, account, public_id in rows
    ], total
