"""Read side of the staff (support and admin) API: the order search with staff fields, one order
with its timeline, documents and callback deliveries, the intake queue, disputes, callback
deliveries of every store and the fraud lists (balances: `staff_balances`; merchants:
`staff_merchants`).

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

from sqlalchemy import ColumnElement, Select, false, func, literal, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    AuditLog,
    Bank,
    CallbackDelivery,
    CryptoCurrency,
    FiatCurrency,
    FraudList,
    IncomingOrder,
    MerchantStore,
    OrderHistory,
    PaymentMethod,
    ReqTrader,
    UploadedDocument,
)
from jivapay.database.types import mask_number
from jivapay.enums import (
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
    CallbackDeliveryRead,
    DisputeRead,
    IncomingOrderRead,
    StaffOrderDetail,
    StaffOrderRead,
)
from jivapay.security import Principal
from jivapay.services import callback_service, fraud_lists
from jivapay.services.document_service import document_views
from jivapay.services.order_queries import check_range, visible_order
from jivapay.services.order_timeline import ORDER_ENTITY, order_timeline
from jivapay.utils.exceptions import NotFound, ValidationFailed
from jivapay.utils.query_filters import orders_visible_to

COUNT_CAP = 10_000


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


def search_conditions(
    session: Session, principal: Principal, search: OrderSearch
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of an order search (visibility first); `ValidationFailed` on bad ranges.

    A requisite's last four digits are resolved to requisite ids first (a small indexed table),
    so the planner sees the ids and walks `(requisite_id, created_at)` instead of scanning all
    orders newest first in the hope of meeting one of that requisite's.
    """
    check_range(search.amount_min, search.amount_max, "amount")
    check_range(search.created_from, search.created_to, "created")
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
        requisite_ids = session.scalars(
            select(ReqTrader.id).where(ReqTrader.req_last4 == search.requisite_last4)
        ).all()
        c.append(h.requisite_id.in_(requisite_ids) if requisite_ids else false())
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
    session: Session, principal: Principal, search: OrderSearch, *, limit: int, offset: int
) -> Select[Any]:
    """The ids of one page of the search, in order (the bench EXPLAINs this statement)."""
    return (
        select(OrderHistory.id)
        .where(*search_conditions(session, principal, search))
        .order_by(*_ORDERINGS[search.sort])
        .limit(limit)
        .offset(offset)
    )


def search_count_statement(
    session: Session, principal: Principal, search: OrderSearch
) -> Select[Any]:
    """How many orders match, counting at most `COUNT_CAP + 1`."""
    capped = (
        select(literal(1))
        .select_from(OrderHistory)
        .where(*search_conditions(session, principal, search))
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
        session.scalars(
            search_page_statement(session, principal, search, limit=limit, offset=offset)
        )
    )
    counted: int = session.scalar(search_count_statement(session, principal, search)) or 0
    capped = counted > COUNT_CAP
    return _order_rows(session, ids), min(counted, COUNT_CAP), capped


def _deliveries(
    session: Session, rows: Sequence[tuple[CallbackDelivery, str]]
) -> list[CallbackDeliveryRead]:
    return callback_service.delivery_reads(session, rows, CallbackDeliveryRead)


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
    check_range(search.created_from, search.created_to, "created")
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
    check_range(search.created_from, search.created_to, "created")
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
    return callback_service.delivery_page(
        session, c, CallbackDeliveryRead, limit=limit, offset=offset
    )


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
