"""Read side of the staff (support and admin) API: the order search with staff fields, one order
with its timeline, documents and callback deliveries, the intake queue, disputes, balances and
their history, the platform balance, merchants and callback deliveries of every store.

Orders are always scoped by `utils.query_filters.orders_visible_to` (a grant limited to one store
sees that store's orders only). The search filters and pages on `order_history` alone (the indexes
of migration 0004 serve each filter) and joins the display columns for the page's rows only; its
count stops at `COUNT_CAP` so a broad filter over millions of orders stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, literal, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    AuditLog,
    BalancePlatform,
    BalancePlatformHistory,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    Bank,
    CallbackDelivery,
    CallbackDeliveryAttempt,
    CryptoCurrency,
    FiatCurrency,
    FraudList,
    IncomingOrder,
    Merchant,
    MerchantStore,
    OrderHistory,
    PaymentMethod,
    ReqTrader,
    StoreCommission,
    Trader,
    UploadedDocument,
    User,
)
from jivapay.database.types import mask_number
from jivapay.enums import (
    BalanceOperation,
    CallbackStatus,
    DisputeState,
    DocumentKind,
    FraudListKind,
    FraudListType,
    IncomingOrderStatus,
    OrderSearchSort,
    OrderStatus,
    OrderType,
)
from jivapay.schemas.documents import DocumentRead
from jivapay.schemas.staff import (
    AccountBalanceRead,
    AttemptRead,
    BalanceHistoryRead,
    CallbackDeliveryRead,
    DisputeRead,
    IncomingOrderRead,
    MerchantDetailRead,
    MerchantStatsRead,
    PlatformBalanceRead,
    StaffOrderDetail,
    StaffOrderRead,
    StaffStoreRead,
    StoreCommissionRead,
)
from jivapay.security import Principal
from jivapay.services import fraud_lists
from jivapay.services.document_service import document_views
from jivapay.services.order_timeline import ORDER_ENTITY, order_timeline
from jivapay.utils.exceptions import NotFound, ValidationFailed
from jivapay.utils.query_filters import orders_visible_to

COUNT_CAP = 10_000
RECENT_ORDERS = 20


def _check_range(low: Any, high: Any, what: str) -> None:
    if low is not None and high is not None and low > high:
        raise ValidationFailed(f"{what}: the lower bound is above the upper bound")


# --------------------------------------------------------------------------- order search


@dataclass(frozen=True)
class OrderSearch:
    order_id: str | None = None
    merchant_order_id: str | None = None
    customer_id: str | None = None
    store_id: int | None = None
    merchant_id: int | None = None
    trader_id: int | None = None
    requisite_last4: str | None = None
    amount: Decimal | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    status: OrderStatus | None = None
    order_type: OrderType | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    sort: OrderSearchSort = OrderSearchSort.CREATED_DESC


def search_conditions(principal: Principal, search: OrderSearch) -> list[ColumnElement[bool]]:
    """The WHERE clauses of an order search (visibility first); `ValidationFailed` on bad ranges."""
    _check_range(search.amount_min, search.amount_max, "amount")
    _check_range(search.created_from, search.created_to, "created")
    h = OrderHistory
    c: list[ColumnElement[bool]] = [orders_visible_to(principal)]
    if search.order_id is not None:
        c.append(h.public_id == search.order_id)
    if search.merchant_order_id is not None:
        c.append(
            h.incoming_order_id.in_(
                select(IncomingOrder.id).where(
                    IncomingOrder.merchant_order_id == search.merchant_order_id
                )
            )
        )
    if search.customer_id is not None:
        c.append(h.customer_id == search.customer_id)
    if search.store_id is not None:
        c.append(h.store_id == search.store_id)
    if search.merchant_id is not None:
        c.append(h.merchant_id == search.merchant_id)
    if search.trader_id is not None:
        c.append(h.trader_id == search.trader_id)
    if search.requisite_last4 is not None:
        c.append(
            h.requisite_id.in_(
                select(ReqTrader.id).where(ReqTrader.req_last4 == search.requisite_last4)
            )
        )
    if search.amount is not None:
        c.append(h.amount_fiat == search.amount)
    if search.amount_min is not None:
        c.append(h.amount_fiat >= search.amount_min)
    if search.amount_max is not None:
        c.append(h.amount_fiat <= search.amount_max)
    if search.status is not None:
        c.append(h.status == search.status.value)
    if search.order_type is not None:
        c.append(h.order_type == search.order_type.value)
    if search.created_from is not None:
        c.append(h.created_at >= search.created_from)
    if search.created_to is not None:
        c.append(h.created_at < search.created_to)
    return c


_ORDERINGS: dict[OrderSearchSort, tuple[Any, Any]] = {
    OrderSearchSort.CREATED_DESC: (OrderHistory.created_at.desc(), OrderHistory.id.desc()),
    OrderSearchSort.CREATED_ASC: (OrderHistory.created_at.asc(), OrderHistory.id.asc()),
    OrderSearchSort.AMOUNT_DESC: (OrderHistory.amount_fiat.desc(), OrderHistory.id.desc()),
    OrderSearchSort.AMOUNT_ASC: (OrderHistory.amount_fiat.asc(), OrderHistory.id.asc()),
}


def search_page_statement(
    principal: Principal, search: OrderSearch, *, limit: int, offset: int
) -> Select[Any]:
    """The ids of one page of the search, in order (the bench EXPLAINs this statement)."""
    return (
        select(OrderHistory.id)
        .where(*search_conditions(principal, search))
        .order_by(*_ORDERINGS[search.sort])
        .limit(limit)
        .offset(offset)
    )


def search_count_statement(principal: Principal, search: OrderSearch) -> Select[Any]:
    """How many orders match, counting at most `COUNT_CAP + 1`."""
    capped = (
        select(literal(1))
        .select_from(OrderHistory)
        .where(*search_conditions(principal, search))
        .limit(COUNT_CAP + 1)
        .subquery()
    )
    return select(func.count()).select_from(capped)


def _order_rows(session: Session, ids: Sequence[int]) -> list[StaffOrderRead]:
    if not ids:
        return []
    stmt = (
        select(
            OrderHistory,
            IncomingOrder,
            MerchantStore.store_name,
            ReqTrader.req_last4,
            Bank.code,
            PaymentMethod.code,
            FiatCurrency.code,
            CryptoCurrency.code,
        )
        .join(IncomingOrder, IncomingOrder.id == OrderHistory.incoming_order_id)
        .join(MerchantStore, MerchantStore.id == OrderHistory.store_id)
        .join(ReqTrader, ReqTrader.id == OrderHistory.requisite_id)
        .join(Bank, Bank.id == OrderHistory.bank_id)
        .join(PaymentMethod, PaymentMethod.id == OrderHistory.payment_method_id)
        .join(FiatCurrency, FiatCurrency.id == OrderHistory.fiat_currency_id)
        .join(CryptoCurrency, CryptoCurrency.id == OrderHistory.crypto_currency_id)
        .where(OrderHistory.id.in_(ids))
    )
    by_id = {}
    for o, i, store_name, last4, bank, method, fiat, crypto in session.execute(stmt):
        by_id[o.id] = StaffOrderRead(
            order_id=o.public_id,
            merchant_order_id=i.merchant_order_id,
            order_type=OrderType(o.order_type),
            status=OrderStatus(o.status),
            intake_status=IncomingOrderStatus(i.status),
            failure_reason=i.failure_reason,
            store_id=o.store_id,
            store_name=store_name,
            merchant_id=o.merchant_id,
            trader_id=o.trader_id,
            requisite_id=o.requisite_id,
            requisite_masked=mask_number(last4) or "",
            bank=bank,
            payment_method=method,
            amount_fiat=o.amount_fiat,
            fiat_currency=fiat,
            amount_crypto=o.amount_crypto,
            crypto_currency=crypto,
            exchange_rate=o.exchange_rate,
            store_commission_rate=o.store_commission_rate,
            store_commission=o.store_commission,
            trader_commission_rate=o.trader_commission_rate,
            trader_commission=o.trader_commission,
            platform_profit=o.platform_profit,
            hold_amount=o.hold_amount,
            customer_id=o.customer_id,
            customer_ip=o.customer_ip,
            beneficiary_masked=mask_number(i.beneficiary_last4),
            expires_at=o.expires_at,
            confirm_deadline_at=o.confirm_deadline_at,
            created_at=o.created_at,
            paid_at=o.paid_at,
            completed_at=o.completed_at,
            canceled_at=o.canceled_at,
            disputed_at=o.disputed_at,
            cancellation_reason=o.cancellation_reason,
            dispute_reason=o.dispute_reason,
        )
    return [by_id[i] for i in ids if i in by_id]


def search_orders(
    session: Session, *, principal: Principal, search: OrderSearch, limit: int, offset: int
) -> tuple[list[StaffOrderRead], int, bool]:
    """One page of matching orders, the count (capped) and whether the count was capped."""
    ids: list[int] = list(
        session.scalars(search_page_statement(principal, search, limit=limit, offset=offset))
    )
    counted: int = session.scalar(search_count_statement(principal, search)) or 0
    capped = counted > COUNT_CAP
    return _order_rows(session, ids), min(counted, COUNT_CAP), capped


def visible_order(session: Session, *, principal: Principal, public_id: str) -> OrderHistory:
    """The order with this public id if `principal` may see it, else `NotFound`."""
    order = session.scalars(
        select(OrderHistory).where(
            OrderHistory.public_id == public_id, orders_visible_to(principal)
        )
    ).first()
    if order is None:
        raise NotFound("order not found")
    return order


def _deliveries(
    session: Session, rows: Sequence[tuple[CallbackDelivery, str]]
) -> list[CallbackDeliveryRead]:
    ids = [d.id for d, _ in rows]
    attempts: dict[int, list[AttemptRead]] = {i: [] for i in ids}
    if ids:
        for a in session.scalars(
            select(CallbackDeliveryAttempt)
            .where(CallbackDeliveryAttempt.delivery_id.in_(ids))
            .order_by(CallbackDeliveryAttempt.id)
        ):
            attempts[a.delivery_id].append(
                AttemptRead(
                    attempted_at=a.attempted_at,
                    status_code=a.status_code,
                    duration_ms=a.duration_ms,
                    error=a.error,
                    response_excerpt=a.response_excerpt,
                )
            )
    return [
        CallbackDeliveryRead(
            id=d.id,
            store_id=d.store_id,
            event_id=d.event_id,
            event_type=d.event_type,
            order_id=public_id,
            status=CallbackStatus(d.status),
            url=d.url,
            attempt_count=d.attempt_count,
            next_attempt_at=d.next_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            delivered_at=d.delivered_at,
            created_at=d.created_at,
            updated_at=d.updated_at,
            attempts=attempts[d.id],
        )
        for d, public_id in rows
    ]


def order_detail(session: Session, *, principal: Principal, public_id: str) -> StaffOrderDetail:
    """One order with its timeline, documents (presigned) and callback deliveries."""
    order = visible_order(session, principal=principal, public_id=public_id)
    (view,) = _order_rows(session, [order.id])
    deliveries = session.scalars(
        select(CallbackDelivery)
        .where(CallbackDelivery.incoming_order_id == order.incoming_order_id)
        .order_by(CallbackDelivery.created_at, CallbackDelivery.id)
    ).all()
    return StaffOrderDetail(
        **view.model_dump(),
        timeline=order_timeline(session, public_id=public_id),
        documents=[
            DocumentRead.model_validate(d, from_attributes=True)
            for d in document_views(session, order_id=order.id)
        ],
        callbacks=_deliveries(session, [(d, public_id) for d in deliveries]),
    )


# --------------------------------------------------------------------------- intake queue


@dataclass(frozen=True)
class IntakeSearch:
    status: IncomingOrderStatus | None = None
    order_id: str | None = None
    store_id: int | None = None
    order_type: OrderType | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _fraud_rules(session: Session, public_ids: Sequence[str]) -> dict[str, str]:
    if not public_ids:
        return {}
    rows = session.execute(
        select(AuditLog.target_id, AuditLog.details["rule"].astext)
        .where(
            AuditLog.target_entity == ORDER_ENTITY,
            AuditLog.target_id.in_(public_ids),
            AuditLog.action.in_(("fraud.review", "fraud.deny")),
        )
        .order_by(AuditLog.id)
    ).all()
    return {target: rule for target, rule in rows if target is not None and rule}


def list_incoming(
    session: Session, *, search: IntakeSearch, limit: int, offset: int
) -> tuple[list[IncomingOrderRead], int]:
    """The intake queue: newest first, with retries, failure reasons and the fraud rule."""
    _check_range(search.created_from, search.created_to, "created")
    i = IncomingOrder
    c: list[ColumnElement[bool]] = []
    if search.status is not None:
        c.append(i.status == search.status.value)
    if search.order_id is not None:
        c.append(i.public_id == search.order_id)
    if search.store_id is not None:
        c.append(i.store_id == search.store_id)
    if search.order_type is not None:
        c.append(i.order_type == search.order_type.value)
    if search.created_from is not None:
        c.append(i.created_at >= search.created_from)
    if search.created_to is not None:
        c.append(i.created_at < search.created_to)
    total = session.scalar(select(func.count()).select_from(i).where(*c)) or 0
    rows = session.execute(
        select(i, FiatCurrency.code, CryptoCurrency.code)
        .join(FiatCurrency, FiatCurrency.id == i.fiat_currency_id)
        .join(CryptoCurrency, CryptoCurrency.id == i.crypto_currency_id)
        .where(*c)
        .order_by(i.created_at.desc(), i.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    rules = _fraud_rules(session, [row.public_id for row, _, _ in rows])
    items = [
        IncomingOrderRead(
            order_id=row.public_id,
            store_id=row.store_id,
            order_type=OrderType(row.order_type),
            status=IncomingOrderStatus(row.status),
            merchant_order_id=row.merchant_order_id,
            amount_fiat=row.amount_fiat,
            fiat_currency=fiat,
            amount_crypto=row.amount_crypto,
            crypto_currency=crypto,
            store_hold=row.store_hold,
            customer_id=row.customer_id,
            customer_ip=row.customer_ip,
            retry_count=row.retry_count,
            last_attempt_at=row.last_attempt_at,
            next_attempt_at=row.next_attempt_at,
            failure_reason=row.failure_reason,
            fraud_rule=rules.get(row.public_id),
            created_at=row.created_at,
        )
        for row, fiat, crypto in rows
    ]
    return items, total


# --------------------------------------------------------------------------- disputes


def list_disputes(
    session: Session, *, principal: Principal, state: DisputeState, limit: int, offset: int
) -> tuple[list[DisputeRead], int]:
    """Orders that were disputed: open ones (`disputed`) or resolved ones, newest dispute first."""
    h = OrderHistory
    c: list[ColumnElement[bool]] = [orders_visible_to(principal), h.disputed_at.is_not(None)]
    if state == DisputeState.OPEN:
        c.append(h.status == OrderStatus.DISPUTED.value)
    elif state == DisputeState.RESOLVED:
        c.append(h.status != OrderStatus.DISPUTED.value)
    evidence = (
        select(func.count())
        .where(
            UploadedDocument.order_id == h.id,
            UploadedDocument.kind == DocumentKind.DISPUTE_EVIDENCE.value,
        )
        .scalar_subquery()
    )
    total = session.scalar(select(func.count()).select_from(h).where(*c)) or 0
    rows = session.execute(
        select(h, FiatCurrency.code, CryptoCurrency.code, evidence)
        .join(FiatCurrency, FiatCurrency.id == h.fiat_currency_id)
        .join(CryptoCurrency, CryptoCurrency.id == h.crypto_currency_id)
        .where(*c)
        .order_by(h.disputed_at.desc(), h.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    items = [
        DisputeRead(
            order_id=o.public_id,
            status=OrderStatus(o.status),
            order_type=OrderType(o.order_type),
            store_id=o.store_id,
            trader_id=o.trader_id,
            amount_fiat=o.amount_fiat,
            fiat_currency=fiat,
            amount_crypto=o.amount_crypto,
            crypto_currency=crypto,
            disputed_at=o.disputed_at,
            dispute_reason=o.dispute_reason,
            resolved=o.status != OrderStatus.DISPUTED.value,
            evidence_count=count or 0,
        )
        for o, fiat, crypto, count in rows
    ]
    return items, total


# --------------------------------------------------------------------------- balances


def _crypto_condition(code: str | None) -> list[ColumnElement[bool]]:
    return [] if code is None else [CryptoCurrency.code == code.upper()]


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
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(base.order_by(b.store_id, b.id).limit(limit).offset(offset)).all()
    return [
        AccountBalanceRead(
            account_id=row.store_id,
            account_name=name,
            crypto_currency=code,
            balance=row.balance,
            frozen=row.frozen,
            available=row.balance - row.frozen,
            updated_at=row.updated_at,
        )
        for row, name, code in rows
    ], total


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
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(base.order_by(b.trader_id, b.id).limit(limit).offset(offset)).all()
    return [
        AccountBalanceRead(
            account_id=row.trader_id,
            account_name=email,
            crypto_currency=code,
            balance=row.balance,
            frozen=row.frozen,
            available=row.balance - row.frozen,
            updated_at=row.updated_at,
        )
        for row, email, code in rows
    ], total


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
    _check_range(search.created_from, search.created_to, "created")
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


# --------------------------------------------------------------------------- merchants


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


def _store_view(session: Session, store: MerchantStore) -> StaffStoreRead:
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
    balances, _ = list_store_balances(
        session, store_id=store.id, merchant_id=None, crypto_currency=None, limit=50, offset=0
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
        balances=balances,
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
        stores=[_store_view(session, s) for s in stores],
        recent_orders=recent,
    )


# --------------------------------------------------------------------------- callbacks


@dataclass(frozen=True)
class CallbackSearch:
    store_id: int | None = None
    order_id: str | None = None
    status: CallbackStatus | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def list_callbacks(
    session: Session, *, search: CallbackSearch, limit: int, offset: int
) -> tuple[list[CallbackDeliveryRead], int]:
    """Callback deliveries of every store with their attempts, newest first."""
    _check_range(search.created_from, search.created_to, "created")
    d = CallbackDelivery
    c: list[ColumnElement[bool]] = []
    if search.store_id is not None:
        c.append(d.store_id == search.store_id)
    if search.order_id is not None:
        c.append(IncomingOrder.public_id == search.order_id)
    if search.status is not None:
        c.append(d.status == search.status.value)
    if search.created_from is not None:
        c.append(d.created_at >= search.created_from)
    if search.created_to is not None:
        c.append(d.created_at < search.created_to)
    base = (
        select(d, IncomingOrder.public_id)
        .join(IncomingOrder, IncomingOrder.id == d.incoming_order_id)
        .where(*c)
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(d.created_at.desc(), d.id.desc()).limit(limit).offset(offset)
    ).all()
    return _deliveries(session, [(row, public_id) for row, public_id in rows]), total


def delivery_view(session: Session, *, delivery_id: int) -> CallbackDeliveryRead:
    """One delivery of any store with its attempts (`NotFound` when missing)."""
    row = session.execute(
        select(CallbackDelivery, IncomingOrder.public_id)
        .join(IncomingOrder, IncomingOrder.id == CallbackDelivery.incoming_order_id)
        .where(CallbackDelivery.id == delivery_id)
    ).first()
    if row is None:
        raise NotFound("Callback delivery not found", code="callback_delivery_not_found")
    return _deliveries(session, [(row[0], row[1])])[0]


# --------------------------------------------------------------------------- fraud lists


def fraud_list_page(
    session: Session,
    *,
    kind: FraudListKind | None,
    list_type: FraudListType | None,
    value: str | None,
    limit: int,
    offset: int,
) -> tuple[list[fraud_lists.FraudListEntry], int]:
    """Block/allow entries newest first and their count (`value` needs `kind`: it is normalized,
    so a full card number finds its hash)."""
    if value is not None and kind is None:
        raise ValidationFailed("filtering by value needs the kind of the value")
    c: list[ColumnElement[bool]] = []
    if kind is not None:
        c.append(FraudList.kind == kind.value)
    if list_type is not None:
        c.append(FraudList.list_type == list_type.value)
    if value is not None and kind is not None:
        c.append(FraudList.value == fraud_lists.normalize_value(kind, value))
    total = session.scalar(select(func.count()).select_from(FraudList).where(*c)) or 0
    entries = fraud_lists.list_entries(
        session, kind=kind, list_type=list_type, value=value, limit=limit, offset=offset
    )
    return entries, total
