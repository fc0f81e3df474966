"""Staff read side of merchants: every merchant with its order statistics, and one merchant with
its stores (never a secret: the private key shows as its last four), commissions, balances and
recent orders."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    CryptoCurrency,
    FiatCurrency,
    Merchant,
    MerchantStore,
    OrderHistory,
    StoreCommission,
    User,
)
from jivapay.database.types import mask_number
from jivapay.enums import OrderStatus
from jivapay.permissions import Permission, check_permission
from jivapay.schemas.staff import (
    MerchantDetailRead,
    MerchantStatsRead,
    StaffStoreRead,
    StoreCommissionRead,
)
from jivapay.security import Principal
from jivapay.services.staff_balances import list_store_balances
from jivapay.services.staff_queries import OrderSearch, search_orders
from jivapay.utils.exceptions import NotFound

RECENT_ORDERS = 20


def merchant_stats(
    session: Session, *, limit: int, offset: int
) -> tuple[list[MerchantStatsRead], int]:
    """Every merchant with store and order counts, completed turnover and commission paid."""
    o = OrderHistory
    completed = o.status == OrderStatus.COMPLETED.value
    orders = (
        select(
            o.merchant_id.label("mid"),
            func.count().label("total"),
            func.count().filter(completed).label("completed"),
            func.coalesce(func.sum(o.amount_fiat).filter(completed), 0).label("turnover"),
            func.coalesce(func.sum(o.store_commission).filter(completed), 0).label("commission"),
        )
        .group_by(o.merchant_id)
        .subquery()
    )
    stores = (
        select(MerchantStore.merchant_id.label("mid"), func.count().label("stores"))
        .group_by(MerchantStore.merchant_id)
        .subquery()
    )
    total = session.scalar(select(func.count()).select_from(Merchant)) or 0
    rows = session.execute(
        select(
            Merchant,
            User.email,
            User.is_active,
            stores.c.stores,
            orders.c.total,
            orders.c.completed,
            orders.c.turnover,
            orders.c.commission,
        )
        .join(User, User.id == Merchant.user_id)
        .outerjoin(stores, stores.c.mid == Merchant.id)
        .outerjoin(orders, orders.c.mid == Merchant.id)
        .order_by(Merchant.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return [
        MerchantStatsRead(
            merchant_id=m.id,
            email=email,
            company_name=m.company_name,
            is_active=active,
            stores=n_stores or 0,
            orders_total=n_total or 0,
            orders_completed=n_done or 0,
            turnover_fiat_completed=turnover or Decimal(0),
            store_commission_completed=commission or Decimal(0),
        )
        for m, email, active, n_stores, n_total, n_done, turnover, commission in rows
    ], total


def _store_view(session: Session, store: MerchantStore, *, balances: bool) -> StaffStoreRead:
    commissions = [
        StoreCommissionRead(
            commission_payin=row.commission_payin,
            commission_payout=row.commission_payout,
            created_at=row.created_at,
        )
        for row in session.scalars(
            select(StoreCommission)
            .where(StoreCommission.store_id == store.id)
            .order_by(StoreCommission.created_at.desc(), StoreCommission.id.desc())
        )
    ]
    shown = (
        list_store_balances(
            session, store_id=store.id, merchant_id=None, crypto_currency=None, limit=50, offset=0
        )[0]
        if balances
        else None
    )
    fiat = session.get(FiatCurrency, store.fiat_currency_id)
    crypto = session.get(CryptoCurrency, store.crypto_currency_id)
    assert fiat is not None and crypto is not None
    return StaffStoreRead(
        store_id=store.id,
        store_name=store.store_name,
        crypto_currency=crypto.code,
        fiat_currency=fiat.code,
        lower_limit=store.lower_limit,
        upper_limit=store.upper_limit,
        public_api_key=store.public_api_key,
        private_api_key_masked=mask_number(store.private_api_key_last4) or "",
        callback_url=store.callback_url,
        callbacks_disabled_at=store.callbacks_disabled_at,
        pay_in_enabled=store.pay_in_enabled,
        pay_out_enabled=store.pay_out_enabled,
        access=store.access,
        trafic_access=store.trafic_access,
        order_ttl_minutes=store.order_ttl_minutes,
        commission=commissions[0] if commissions else None,
        commission_history=commissions,
        balances=shown,
        created_at=store.created_at,
    )


def merchant_detail(
    session: Session, *, principal: Principal, merchant_id: int
) -> MerchantDetailRead:
    """A merchant with its stores (no secrets), commissions, balances and recent orders."""
    merchant = session.get(Merchant, merchant_id)
    if merchant is None:
        raise NotFound("merchant not found", code="merchant_not_found")
    user = session.get(User, merchant.user_id)
    assert user is not None
    stores = session.scalars(
        select(MerchantStore)
        .where(MerchantStore.merchant_id == merchant_id)
        .order_by(MerchantStore.id)
    ).all()
    recent, _, _ = search_orders(
        session,
        principal=principal,
        search=OrderSearch(merchant_id=merchant_id),
        limit=RECENT_ORDERS,
        offset=0,
    )
    show_balances = check_permission(principal, Permission.BALANCES_VIEW_ALL)
    return MerchantDetailRead(
        merchant_id=merchant.id,
        user_id=user.id,
        email=user.email,
        company_name=merchant.company_name,
        first_name=merchant.first_name,
        last_name=merchant.last_name,
        is_verified=merchant.is_verified,
        is_active=user.is_active,
        created_at=merchant.created_at,
        stores=[_store_view(session, s, balances=show_balances) for s in stores],
        recent_orders=recent,
    )
