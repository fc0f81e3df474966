"""Reading orders for the role APIs: listing with filters and pagination, and one order's view,
always scoped by `utils.query_filters.orders_visible_to` (another owner's order is not found)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

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
from jivapay.enums import OrderStatus, OrderType, Role
from jivapay.schemas.documents import DocumentRead
from jivapay.schemas.orders import BeneficiaryRead, OrderRead, RequisiteBrief
from jivapay.security import Principal
from jivapay.services.document_service import DocumentView, document_views, views_by_order
from jivapay.utils.exceptions import NotFound
from jivapay.utils.query_filters import orders_visible_to


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
    documents: list[DocumentView] | None = None,
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


def get_order(session: Session, *, principal: Principal, public_id: str) -> OrderRead:
    """One order the caller may see; anything else is not found."""
    order = session.scalars(
        select(OrderHistory).where(
            OrderHistory.public_id == public_id, orders_visible_to(principal)
        )
    ).first()
    if order is None:
        raise NotFound("order not found")
    return _view(session, principal, order)
