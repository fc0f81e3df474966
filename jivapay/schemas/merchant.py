"""Shapes of the merchant API's orders, balances and statistics.

A merchant sees its store's commission on each order, never the trader's commission or the
platform's profit; requisite and beneficiary numbers only masked; receipts as presigned links.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from jivapay.enums import BalanceOperation, MerchantOrderStatus, OrderType
from jivapay.schemas.common import Money
from jivapay.schemas.documents import DocumentRead


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --------------------------------------------------------------------------- orders


class MerchantRequisiteRead(_Read):
    bank: str
    payment_method: str
    number_masked: str


class MerchantBeneficiaryRead(_Read):
    name: str | None
    number_masked: str
    bank: str | None
    payment_method: str | None


class MerchantOrderRead(_Read):
    order_id: str = Field(description="The public order id")
    merchant_order_id: str
    store_id: int
    order_type: OrderType
    status: MerchantOrderStatus
    amount_fiat: Money
    fiat_currency: str
    amount_crypto: Money
    crypto_currency: str
    exchange_rate: Money
    store_commission_rate: Money = Field(description="Percent, fixed at intake")
    store_commission: Money = Field(description="Crypto, fixed at intake")
    customer_id: str | None
    created_at: datetime
    updated_at: datetime
    assigned: bool = Field(description="Whether a trader's requisite was assigned")
    expires_at: datetime | None
    paid_at: datetime | None
    completed_at: datetime | None
    canceled_at: datetime | None
    disputed_at: datetime | None
    failure_reason: str | None = Field(description="Why intake failed (a code), when it did")
    cancellation_reason: str | None
    dispute_reason: str | None
    requisite: MerchantRequisiteRead | None
    beneficiary: MerchantBeneficiaryRead | None
    receipts: list[DocumentRead] = Field(
        default_factory=list, description="Receipts and dispute evidence, with presigned URLs"
    )


class MerchantOrderChangeRead(MerchantOrderRead):
    changed: bool


# --------------------------------------------------------------------------- balances


class StoreBalanceRead(_Read):
    store_id: int
    store_name: str
    crypto_currency: str
    balance: Money
    frozen: Money = Field(description="Held for open PayOuts")
    available: Money = Field(description="balance - frozen")


class StoreBalanceHistoryRead(_Read):
    id: int
    store_id: int
    crypto_currency: str
    operation: BalanceOperation
    amount: Money = Field(description="Change of the balance")
    frozen_delta: Money = Field(description="Change of the frozen part")
    balance_after: Money
    frozen_after: Money
    order_id: str | None = Field(description="The order's public id, when an order moved it")
    reason: str | None
    created_at: datetime


# --------------------------------------------------------------------------- statistics


class StatusCount(_Read):
    status: MerchantOrderStatus
    count: int


class StoreTypeStatisticsRead(_Read):
    store_id: int
    store_name: str
    order_type: OrderType
    fiat_currency: str
    crypto_currency: str
    total_orders: int
    counts_by_status: list[StatusCount]
    completed_count: int
    completed_turnover_fiat: Money
    completed_turnover_crypto: Money
    commission_paid: Money = Field(description="Store commission of completed orders (crypto)")
    assigned_count: int = Field(description="Orders that reached a trader")
    conversion: Money | None = Field(
        description="completed / assigned (0..1, 4 places); null when nothing was assigned"
    )
    average_completion_seconds: int | None = Field(
        description="Mean time from intake to completion of the completed orders"
    )


class MerchantStatisticsRead(_Read):
    date_from: datetime
    date_to: datetime
    items: list[StoreTypeStatisticsRead]
