"""Reading orders for the role APIs: listing with filters and pagination, and one order's view,
always scoped by `utils.query_filters.orders_visible_to` (another owner's order is not found)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from jivapay.database.base import as_utc
from jivapay.database.models import (
    Bank,
    CryptoCurrency,
    FiatCurrency,
    IncomingOrder,
    OrderHistory,
    PaymentMethod,
    ReqTrader,
)
from jivapay.database.types import mask_number
from jivapay.enums import MerchantOrderStatus, OrderStatus, OrderType, Role
from jivapay.schemas.documents import DocumentRead
from jivapay.schemas.merchant import (
    MerchantBeneficiaryRead,
    MerchantOrderRead,
    MerchantRequisiteRead,
)
from jivapay.schemas.orders import BeneficiaryRead, OrderRead, RequisiteBrief
from jivapay.security import Principal
from jivapay.services import reference_data
from jivapay.services.document_service import document_views, views_by_order
from jivapay.services.gateway_service import public_failure_reason
from jivapay.utils.exceptions import NotFound, ValidationFailed
from jivapay.utils.query_filters import incoming_orders_visible_to, orders_visible_to


def check_range(low: Any, high: Any, what: str) -> None:
    """`ValidationFailed` when both bounds are given and the lower is above the upper: the one
    check of a list's range filters (dates, amounts) for every role's lists."""
    if isinstance(low, datetime) and isinstance(high, datetime):
        low, high = as_utc(low), as_utc(high)
    if low is not None and high is not None and low > high:
        raise ValidationFailed(f"{what}: the lower bound is above the upper bound")


@dataclass(frozen=True)
class OrderFilters:
    status: OrderStatus | None = None
    order_type: OrderType | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _view(
    session: Session,
    principal: Principal,
    order: OrderHistory,
    documents: list[DocumentRead] | None = None,
) -> OrderRead:
    requisite = session.get(ReqTrader, order.requisite_id)
    incoming = session.get(IncomingOrder, order.incoming_order_id)
    bank = session.get(Bank, order.bank_id)
    method = session.get(PaymentMethod, order.payment_method_id)
    fiat = session.get(FiatCurrency, order.fiat_currency_id)
    crypto = session.get(CryptoCurrency, order.crypto_currency_id)
    assert requisite and incoming and bank and method and fiat and crypto
    beneficiary = None
    if order.order_type == OrderType.PAYOUT:
        # The assigned trader must see where to send the money, but only while the order is open.
        reveal = principal.role == Role.TRADER and order.status in (
            OrderStatus.PENDING,
            OrderStatus.PAID,
        )
        beneficiary = BeneficiaryRead(
            name=incoming.beneficiary_name,
            number=incoming.beneficiary_number if reveal else None,
            number_masked=mask_number(incoming.beneficiary_last4),
        )
    return OrderRead(
        order_id=order.public_id,
        merchant_order_id=incoming.merchant_order_id,
        order_type=OrderType(order.order_type),
        status=OrderStatus(order.status),
        amount_fiat=order.amount_fiat,
        fiat_currency=fiat.code,
        amount_crypto=order.amount_crypto,
        crypto_currency=crypto.code,
        exchange_rate=order.exchange_rate,
        trader_commission=order.trader_commission,
        requisite=RequisiteBrief(
            requisite_id=requisite.id,
            bank=bank.code,
            payment_method=method.code,
            number_masked=mask_number(requisite.req_last4) or "",
        ),
        beneficiary=beneficiary,
        expires_at=order.expires_at,
        confirm_deadline_at=order.confirm_deadline_at,
        created_at=order.created_at,
        paid_at=order.paid_at,
        completed_at=order.completed_at,
        canceled_at=order.canceled_at,
        disputed_at=order.disputed_at,
        cancellation_reason=order.cancellation_reason,
        receipts=[
            DocumentRead.model_validate(d, from_attributes=True)
            for d in (
                documents if documents is not None else document_views(session, order_id=order.id)
            )
        ],
    )


def list_orders(
    session: Session, *, principal: Principal, filters: OrderFilters, limit: int, offset: int
) -> tuple[list[OrderRead], int]:
    """The caller's orders, newest first, with the total count for pagination."""
    check_range(filters.created_from, filters.created_to, "created")
    conditions = [orders_visible_to(principal)]
    if filters.status is not None:
        conditions.append(OrderHistory.status == filters.status.value)
    if filters.order_type is not None:
        conditions.append(OrderHistory.order_type == filters.order_type.value)
    if filters.created_from is not None:
        conditions.append(OrderHistory.created_at >= filters.created_from)
    if filters.created_to is not None:
        conditions.append(OrderHistory.created_at < filters.created_to)
    total = session.scalar(select(func.count()).select_from(OrderHistory).where(*conditions)) or 0
    rows = session.scalars(
        select(OrderHistory)
        .where(*conditions)
        .order_by(OrderHistory.created_at.desc(), OrderHistory.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    documents = views_by_order(session, order_ids=[row.id for row in rows])
    related = _load_related(session, rows)
    views = [_view(session, principal, row, documents.get(row.id, [])) for row in rows]
    del related  # held until the views were built: the identity map's references are weak
    return views, total


def _load_related(session: Session, orders: Sequence[OrderHistory]) -> list[object]:
    """Load the rows each order's view reads, one query per table for the whole page.

    `_view` then finds them with `session.get` in the identity map instead of querying per order.
    The list returned holds them (the identity map alone keeps only weak references).
    """
    wanted: list[tuple[Any, set[int]]] = [
        (ReqTrader, {o.requisite_id for o in orders}),
        (IncomingOrder, {o.incoming_order_id for o in orders}),
        (Bank, {o.bank_id for o in orders}),
        (PaymentMethod, {o.payment_method_id for o in orders}),
        (FiatCurrency, {o.fiat_currency_id for o in orders}),
        (CryptoCurrency, {o.crypto_currency_id for o in orders}),
    ]
    loaded: list[object] = []
    for model, ids in wanted:
        if ids:
            loaded += session.scalars(select(model).where(model.id.in_(ids))).all()
    return loaded


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


def get_order(session: Session, *, principal: Principal, public_id: str) -> OrderRead:
    """One order the caller may see; anything else is not found."""
    return _view(
        session, principal, visible_order(session, principal=principal, public_id=public_id)
    )


# --------------------------------------------------------------------------- merchants' orders
# A merchant's order list starts at intake: an order still being assigned (`new`, `retrying`,
# `manual_review`) or one that failed there has no `order_history` row, so the list reads
# `incoming_orders` and joins the assigned order when there is one.

_INTAKE_STATUSES = frozenset(
    {
        MerchantOrderStatus.NEW,
        MerchantOrderStatus.RETRYING,
        MerchantOrderStatus.MANUAL_REVIEW,
        MerchantOrderStatus.FAILED,
    }
)


@dataclass(frozen=True)
class MerchantOrderFilters:
    store_id: int | None = None
    status: MerchantOrderStatus | None = None
    order_type: OrderType | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    merchant_order_id: str | None = None


def _code(session: Session, model: type[Any], row_id: int | None) -> str | None:
    row = session.get(model, row_id) if row_id is not None else None
    return None if row is None else str(row.code)


def merchant_order_view(
    session: Session,
    incoming: IncomingOrder,
    order: OrderHistory | None,
    documents: list[DocumentRead] | None = None,
) -> MerchantOrderRead:
    """The merchant's view of one order: store commission, masked numbers, presigned receipts."""
    requisite = None
    if order is not None:
        req = session.get(ReqTrader, order.requisite_id)
        assert req is not None
        requisite = MerchantRequisiteRead(
            bank=_code(session, Bank, order.bank_id) or "",
            payment_method=_code(session, PaymentMethod, order.payment_method_id) or "",
            number_masked=mask_number(req.req_last4) or "",
        )
    beneficiary = None
    if incoming.beneficiary_last4 is not None:
        beneficiary = MerchantBeneficiaryRead(
            name=incoming.beneficiary_name,
            number_masked=mask_number(incoming.beneficiary_last4) or "",
            bank=_code(session, Bank, incoming.target_bank_id),
            payment_method=_code(session, PaymentMethod, incoming.target_payment_method_id),
        )
    if order is not None and documents is None:
        documents = document_views(session, order_id=order.id)
    return MerchantOrderRead(
        order_id=incoming.public_id,
        merchant_order_id=incoming.merchant_order_id,
        store_id=incoming.store_id,
        order_type=OrderType(incoming.order_type),
        status=MerchantOrderStatus(order.status if order is not None else incoming.status),
        amount_fiat=incoming.amount_fiat,
        fiat_currency=reference_data.currency_code(session, FiatCurrency, incoming.fiat_currency_id)
        or "",
        amount_crypto=incoming.amount_crypto,
        crypto_currency=reference_data.currency_code(
            session, CryptoCurrency, incoming.crypto_currency_id
        )
        or "",
        exchange_rate=incoming.exchange_rate,
        store_commission_rate=incoming.store_commission_rate,
        store_commission=incoming.store_commission,
        customer_id=incoming.customer_id,
        created_at=incoming.created_at,
        updated_at=max(incoming.updated_at, order.updated_at) if order else incoming.updated_at,
        assigned=order is not None,
        expires_at=order.expires_at if order else None,
        paid_at=order.paid_at if order else None,
        completed_at=order.completed_at if order else None,
        canceled_at=order.canceled_at if order else None,
        disputed_at=order.disputed_at if order else None,
        failure_reason=public_failure_reason(incoming.failure_reason) if order is None else None,
        cancellation_reason=order.cancellation_reason if order else None,
        dispute_reason=order.dispute_reason if order else None,
        requisite=requisite,
        beneficiary=beneficiary,
        receipts=[DocumentRead.model_validate(d, from_attributes=True) for d in documents or []],
    )


def _preload(session: Session, model: type[Any], ids: set[int]) -> list[Any]:
    return list(session.scalars(select(model).where(model.id.in_(ids)))) if ids else []


def _merchant_order_query(principal: Principal) -> Select[IncomingOrder, OrderHistory]:
    return (
        select(IncomingOrder, OrderHistory)
        .outerjoin(OrderHistory, OrderHistory.incoming_order_id == IncomingOrder.id)
        .where(incoming_orders_visible_to(principal))
    )


def list_merchant_orders(
    session: Session,
    *,
    principal: Principal,
    filters: MerchantOrderFilters,
    limit: int,
    offset: int,
) -> tuple[list[MerchantOrderRead], int]:
    """The caller's stores' orders from intake on, newest first, with the total for paging."""
    stmt = _merchant_order_query(principal)
    if filters.store_id is not None:
        stmt = stmt.where(IncomingOrder.store_id == filters.store_id)
    if filters.status in _INTAKE_STATUSES:
        stmt = stmt.where(IncomingOrder.status == filters.status.value)
    elif filters.status is not None:
        stmt = stmt.where(OrderHistory.status == filters.status.value)
    if filters.order_type is not None:
        stmt = stmt.where(IncomingOrder.order_type == filters.order_type.value)
    if filters.created_from is not None:
        stmt = stmt.where(IncomingOrder.created_at >= filters.created_from)
    if filters.created_to is not None:
        stmt = stmt.where(IncomingOrder.created_at < filters.created_to)
    if filters.merchant_order_id is not None:
        stmt = stmt.where(IncomingOrder.merchant_order_id == filters.merchant_order_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(IncomingOrder.created_at.desc(), IncomingOrder.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    orders = [o for _, o in rows if o is not None]
    # One query per kind instead of one per row: the views' `session.get` calls then hit the
    # identity map (which holds objects weakly: `loaded` keeps them alive meanwhile).
    loaded = [
        _preload(session, ReqTrader, {o.requisite_id for o in orders}),
        _preload(session, Bank, {o.bank_id for o in orders}),
        _preload(session, PaymentMethod, {o.payment_method_id for o in orders}),
    ]
    documents = views_by_order(session, order_ids=[o.id for o in orders])
    items = [
        merchant_order_view(session, incoming, order, documents.get(order.id, []) if order else [])
        for incoming, order in rows
    ]
    del loaded
    return items, total


def find_merchant_order(
    session: Session, *, principal: Principal, public_id: str
) -> tuple[IncomingOrder, OrderHistory | None]:
    """The intake record (and the assigned order) the caller may see; anything else is not found."""
    row = session.execute(
        _merchant_order_query(principal).where(IncomingOrder.public_id == public_id)
    ).first()
    if row is None:
        raise NotFound("order not found")
    return row[0], row[1]


def get_merchant_order(
    session: Session, *, principal: Principal, public_id: str
) -> MerchantOrderRead:
    """One order of the caller's stores, from intake on."""
    incoming, order = find_merchant_order(session, principal=principal, public_id=public_id)
    return merchant_order_view(session, incoming, order)
