"""Order shapes of the role APIs (trader, merchant, staff)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, StrictBool

from jivapay.enums import OrderStatus, OrderType
from jivapay.schemas.common import Money, RequestBody
from jivapay.schemas.documents import DocumentRead


class RequisiteBrief(BaseModel):
    requisite_id: int
    bank: str
    payment_method: str
    number_masked: str


class BeneficiaryRead(BaseModel):
    name: str | None
    number: str | None = Field(
        description="Full number only for the assigned trader of an open PayOut"
    )
    number_masked: str | None


class OrderRead(BaseModel):
    order_id: str = Field(description="The public order id")
    merchant_order_id: str
    order_type: OrderType
    status: OrderStatus
    amount_fiat: Money
    fiat_currency: str
    amount_crypto: Money
    crypto_currency: str
    exchange_rate: Money
    trader_commission: Money
    requisite: RequisiteBrief
    beneficiary: BeneficiaryRead | None = None
    expires_at: datetime
    confirm_deadline_at: datetime | None
    created_at: datetime
    paid_at: datetime | None
    completed_at: datetime | None
    canceled_at: datetime | None
    disputed_at: datetime | None
    cancellation_reason: str | None
    receipts: list[DocumentRead] = Field(
        default_factory=list, description="Receipts and dispute evidence, with presigned URLs"
    )


class ReasonBody(BaseModel):
    model_config = {"extra": "forbid"}

    reason: str | None = Field(default=None, max_length=1000)


class TransitionRead(BaseModel):
    order_id: str
    status: OrderStatus
    changed: bool


class WorkSwitch(RequestBody):
    in_work: StrictBool


class WorkState(BaseModel):
    in_work: bool
    changed: bool = Field(description="false when the switch already was in that position")
