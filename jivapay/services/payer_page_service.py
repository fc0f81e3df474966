"""What the payer's page (`/pay/{order_id}`) may show of a PayIn, by state.

The public order id is the capability. The card/account number is released only while the order
is `pending` and its payment deadline has not passed; every other state, and a pending order past
its deadline that the scheduler has not expired yet (`time_up`), shows the amount, the store and
the deadlines, nothing more.
An unknown id, a PayOut id and a malformed id all answer `None` after the same single lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    Bank,
    FiatCurrency,
    IncomingOrder,
    MerchantStore,
    OrderHistory,
    OwnerOfRequisites,
    PaymentMethod,
    ReqTrader,
)
from jivapay.enums import OrderStatus, OrderType
from jivapay.services.order_status_manager import payment_time_up

_PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
CLOSED_STATES = frozenset({"completed", "canceled", "expired", "failed"})


@dataclass(frozen=True)
class PayTo:
    """Where the payer sends the money (only while the order is pending)."""

    bank: str
    method: str
    number: str
    holder_name: str


@dataclass(frozen=True)
class PayerPageState:
    """One PayIn as its payer sees it."""

    order_id: str
    status: str
    amount_fiat: Decimal
    fiat_currency: str
    store_name: str
    receipt_required: bool
    expires_at: datetime | None
    confirm_deadline_at: datetime | None
    return_url: str | None
    pay_to: PayTo | None
    time_up: bool  # pending, but past its payment deadline: shown as expired, without pay_to

    @property
    def closed(self) -> bool:
        """No further change is expected: the page stops polling."""
        return self.status in CLOSED_STATES


def get_state(session: Session, *, public_id: str) -> PayerPageState | None:
    """The page's view of a PayIn, or None for an unknown, malformed or PayOut id."""
    candidate = public_id if _PUBLIC_ID.fullmatch(public_id) else ""
    row = session.execute(
        select(
            IncomingOrder,
            OrderHistory,
            MerchantStore.store_name,
            MerchantStore.require_payer_receipt,
        )
        .join(MerchantStore, MerchantStore.id == IncomingOrder.store_id)
        .outerjoin(OrderHistory, OrderHistory.incoming_order_id == IncomingOrder.id)
        .where(
            IncomingOrder.public_id == candidate,
            IncomingOrder.order_type == OrderType.PAYIN.value,
        )
    ).first()
    if row is None:
        return None
    incoming, order, store_name, receipt_required = row
    fiat = session.get(FiatCurrency, incoming.fiat_currency_id)
    status = order.status if order is not None else incoming.status
    time_up = order is not None and payment_time_up(order)
    return PayerPageState(
        order_id=incoming.public_id,
        status=status,
        amount_fiat=incoming.amount_fiat,
        fiat_currency=fiat.code if fiat else "",
        store_name=store_name,
        receipt_required=bool(receipt_required),
        expires_at=order.expires_at if order is not None else None,
        confirm_deadline_at=order.confirm_deadline_at if order is not None else None,
        return_url=incoming.return_url,
        pay_to=_pay_to(session, order)
        if order is not None and status == OrderStatus.PENDING and not time_up
        else None,
        time_up=time_up,
    )


def _pay_to(session: Session, order: OrderHistory) -> PayTo:
    requisite = session.get(ReqTrader, order.requisite_id)
    owner = session.get(OwnerOfRequisites, requisite.owner_id) if requisite else None
    bank = session.get(Bank, order.bank_id)
    method = session.get(PaymentMethod, order.payment_method_id)
    return PayTo(
        bank=bank.name if bank else "",
        method=method.name if method else "",
        number=requisite.req_number if requisite else "",
        holder_name=owner.full_name if owner else "",
    )
