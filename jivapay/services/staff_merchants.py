"""Staff read side of merchants: every merchant with its order statistics, and one merchant with
its stores (never a secret: the private key shows as its last four), commissions, balances and
recent orders."""

from __future__ import annotations

from collections import defaultdict

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
from jivapay.enums import OrderStatus, OrderType
from jivapay.permissions import Permission, check_permission
from jivapay.schemas.staff import (
    MerchantDetailRead,
    MerchantStatsRead,
    MerchantTurnoverRead,
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
    """Every merchant with store and order counts and its completed orders per order type and
    currency pair: fiat and crypto amounts of different currencies, and PayIns (money in) and
    PayOuts (money out), are never added into one figure."""
    stores = (
        select(MerchantStore.merchant_id.label("mid"), func.count().label("stores"))
        .group_by(MerchantStore.merchant_id)
        .subquery()
    )
    total = session.scalar(select(func.count()).select_from(Merchant)) or 0
    page = session.execute(
        select(Merchant, User.email, User.is_active, stores.c.stores)
        .join(User, User.id == Merchant.user_id)
        .outerjoin(stores, stores.c.mid == Merchant.id)
        .order_by(Merchant.id)
        .limit(limit)
        .offset(offset)
    ).all()
    o = OrderHistory
    completed = o.status == OrderStatus.COMPLETED.value
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    turnover: dict[int, list[MerchantTurnoverRead]] = defaultdict(list)
    groups = session.execute(
        select(
            o.merchant_id,
            o.order_type,
            FiatCurrency.code,
            CryptoCurrency.code,
            func.count(),
            func.count().filter(completed),
            func.sum(o.amount_fiat).filter(completed),
            func.sum(o.amount_crypto).filter(completed),
            func.sum(o.store_commission).filter(completed),
        )
        .join(FiatCurrency, FiatCurrency.id == o.fiat_currency_id)
        .join(CryptoCurrency, CryptoCurrency.id == o.crypto_currency_id)
        .where(o.merchant_id.in_([m.id for m, *_ in page]))
        .group_by(o.merchant_id, o.order_type, FiatCurrency.code, CryptoCurrency.code)
        .order_by(o.merchant_id, o.order_type, FiatCurrency.code, CryptoCurrency.code)
    )
    for mid, kind, fiat, crypto, n, done, amount_fiat, amount_crypto, commission in groups:
        counts[mid][0] += n
        counts[mid][1] += done
        if done:
            turnover[mid].append(
                MerchantTurnoverRead(
                    order_type=OrderType(kind),
                    fiat_currency=fiat,
                    crypto_currency=crypto,
                    count=done,
                    amount_fiat=amount_fiat,
                    amount_crypto=amount_crypto,
                    store_commission=commission,
                )
            )
    return [
        MerchantStatsRead(
            merchant_id=m.id,
            email=email,
            company_name=m.company_name,
            is_active=active,
            stores=n_stores or 0,
            orders_total=counts[m.id][0],
            orders_completed=counts[m.id][1],
            completed=turnover[m.id],
        )
        for m, email, active, n_stores in page
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
