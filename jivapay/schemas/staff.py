"""Shapes of the staff (support and admin) API: the order search and its detail view, the intake
queue, disputes, balances and their history, merchants, callbacks, fraud lists, and the bodies of
the staff operations (reasons required, money as strict decimal strings)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    WithJsonSchema,
    model_validator,
)

from jivapay.enums import (
    CallbackStatus,
    FraudListKind,
    FraudListType,
    IncomingOrderStatus,
    OrderStatus,
    OrderType,
)
from jivapay.money import MAX_CRYPTO
from jivapay.schemas.callbacks import CallbackAttemptRead
from jivapay.schemas.common import CryptoAmountIn, Money, Page, RequestBody
from jivapay.schemas.documents import DocumentRead

Reason = Annotated[str, Field(min_length=1, max_length=2000)]

# --------------------------------------------------------------------------- orders


class StaffOrderRead(BaseModel):
    """An order as staff see it: the amounts, every commission leg, hold and intake facts."""

    order_id: str = Field(description="The public order id")
    merchant_order_id: str
    order_type: OrderType
    status: OrderStatus
    intake_status: IncomingOrderStatus
    failure_reason: str | None
    store_id: int
    store_name: str
    merchant_id: int
    trader_id: int
    requisite_id: int
    requisite_masked: str
    bank: str
    payment_method: str
    amount_fiat: Money
    fiat_currency: str
    amount_crypto: Money
    crypto_currency: str
    exchange_rate: Money
    store_commission_rate: Money
    store_commission: Money
    trader_commission_rate: Money
    trader_commission: Money
    platform_profit: Money
    hold_amount: Money
    customer_id: str | None
    customer_ip: str | None
    beneficiary_masked: str | None
    expires_at: datetime
    confirm_deadline_at: datetime | None
    created_at: datetime
    paid_at: datetime | None
    completed_at: datetime | None
    canceled_at: datetime | None
    disputed_at: datetime | None
    cancellation_reason: str | None
    dispute_reason: str | None


class OrderSearchPage(Page[StaffOrderRead]):
    total_is_lower_bound: bool = Field(
        description="True when more orders match than were counted (the count stops at 10,000)"
    )


class TimelineEntry(BaseModel):
    at: datetime
    action: str
    from_status: str | None
    to_status: str | None
    actor_user_id: int | None
    actor: str | None
    ip_address: str | None
    reason: str | None
    details: dict[str, Any]


class CallbackDeliveryRead(BaseModel):
    id: int
    store_id: int
    event_id: str
    event_type: str
    order_id: str
    status: CallbackStatus
    url: str | None
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attempts: list[CallbackAttemptRead]


class StaffOrderDetail(StaffOrderRead):
    timeline: list[TimelineEntry]
    documents: list[DocumentRead]
    callbacks: list[CallbackDeliveryRead]


class StaffTransitionRead(BaseModel):
    order_id: str
    status: OrderStatus
    changed: bool


class OptionalReasonIn(RequestBody):
    reason: str | None = Field(default=None, min_length=1, max_length=2000)


class DisputeResolveIn(RequestBody):
    outcome: Literal["completed", "canceled"]
    reason: Reason


class StaffDisputeIn(RequestBody):
    """JSON body of a staff dispute (multipart carries the same `reason` plus `evidence` files)."""

    reason: str | None = Field(default=None, min_length=1, max_length=1000)


class DisputeRead(BaseModel):
    order_id: str
    status: OrderStatus
    order_type: OrderType
    store_id: int
    trader_id: int
    amount_fiat: Money
    fiat_currency: str
    amount_crypto: Money
    crypto_currency: str
    disputed_at: datetime | None
    dispute_reason: str | None
    resolved: bool
    evidence_count: int


# --------------------------------------------------------------------------- intake queue


class IncomingOrderRead(BaseModel):
    order_id: str
    store_id: int
    order_type: OrderType
    status: IncomingOrderStatus
    merchant_order_id: str
    amount_fiat: Money
    fiat_currency: str
    amount_crypto: Money
    crypto_currency: str
    store_hold: Money
    customer_id: str | None
    customer_ip: str | None
    retry_count: int
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    failure_reason: str | None
    fraud_rule: str | None = Field(description="The fraud rule that held or denied the order")
    created_at: datetime


class IntakeActionRead(BaseModel):
    order_id: str
    status: IncomingOrderStatus
    changed: bool


# --------------------------------------------------------------------------- balances


class AccountBalanceRead(BaseModel):
    account_id: int
    account_name: str
    crypto_currency: str
    balance: Money
    frozen: Money
    available: Money
    updated_at: datetime


class BalanceHistoryRead(BaseModel):
    id: int
    operation: str
    amount: Money
    frozen_delta: Money | None
    balance_after: Money
    frozen_after: Money | None
    order_id: str | None
    actor_user_id: int | None
    reason: str | None
    created_at: datetime


class PlatformBalanceRead(BaseModel):
    crypto_currency: str
    balance: Money
    profit_total: Money
    adjustments_total: Money
    updated_at: datetime


_SIGNED_TEXT = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def _signed_decimal(value: Any) -> Decimal:
    if isinstance(value, bool | float):
        raise ValueError('must be a decimal string such as "-12.5", not a float')
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):  # an exact JSON number (`api_routers.routing`)
        if not value.is_finite():
            raise ValueError("must be finite")
        return value
    if isinstance(value, str) and value.isascii() and _SIGNED_TEXT.match(value):
        return Decimal(value)
    raise ValueError('must be a signed decimal string of ASCII digits such as "-12.5"')


def _adjustment(value: Decimal) -> Decimal:
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > 8:
        raise ValueError("at most 8 decimal places")
    if value == 0:
        raise ValueError("an adjustment must not be zero")
    if abs(value) > MAX_CRYPTO:
        raise ValueError("amount is too large")
    return value


SignedCryptoAmountIn = Annotated[
    Decimal,
    BeforeValidator(_signed_decimal),
    AfterValidator(_adjustment),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}),
]


class BalanceMoveIn(RequestBody):
    crypto_currency: str = Field(min_length=1, max_length=16)
    amount: CryptoAmountIn
    reason: Reason


class BalanceAdjustIn(RequestBody):
    account: Literal["store", "trader", "platform"]
    account_id: int | None = Field(default=None, ge=1)
    crypto_currency: str = Field(min_length=1, max_length=16)
    amount: SignedCryptoAmountIn = Field(description="Signed, non-zero, at most 8 places")
    reason: Reason

    @model_validator(mode="after")
    def _account_id_matches_account(self) -> BalanceAdjustIn:
        if self.account != "platform" and self.account_id is None:
            raise ValueError("account_id is required for store and trader accounts")
        if self.account == "platform" and self.account_id is not None:
            raise ValueError("account_id must be left out for the platform account")
        return self


class BalanceChangeRead(BaseModel):
    account: str
    account_id: int | None
    crypto_currency: str
    amount: Money
    balance: Money
    frozen: Money
    available: Money
    history_id: int


# --------------------------------------------------------------------------- merchants


class MerchantTurnoverRead(BaseModel):
    """Completed orders of one direction and currency pair (as the teamlead's `TurnoverRead`)."""

    order_type: OrderType
    fiat_currency: str
    crypto_currency: str
    count: int
    amount_fiat: Money = Field(description="In `fiat_currency`")
    amount_crypto: Money = Field(description="In `crypto_currency`")
    store_commission: Money = Field(description="Commission the store paid, in `crypto_currency`")


class MerchantStatsRead(BaseModel):
    merchant_id: int
    email: str
    company_name: str | None
    is_active: bool
    stores: int
    orders_total: int
    orders_completed: int
    completed: list[MerchantTurnoverRead] = Field(
        description="Completed orders per order type and currency pair: money of different "
        "currencies or directions is never added up"
    )


class StoreCommissionRead(BaseModel):
    commission_payin: Money
    commission_payout: Money
    created_at: datetime


class StaffStoreRead(BaseModel):
    store_id: int
    store_name: str
    crypto_currency: str
    fiat_currency: str
    lower_limit: Money
    upper_limit: Money
    public_api_key: str
    private_api_key_masked: str
    callback_url: str | None
    callbacks_disabled_at: datetime | None
    pay_in_enabled: bool
    pay_out_enabled: bool
    access: bool
    trafic_access: bool
    order_ttl_minutes: int
    commission: StoreCommissionRead | None
    commission_history: list[StoreCommissionRead]
    balances: list[AccountBalanceRead] | None = Field(
        description="null unless the caller holds balances:view:all"
    )
    created_at: datetime


class MerchantDetailRead(BaseModel):
    merchant_id: int
    user_id: int
    email: str
    company_name: str | None
    first_name: str | None
    last_name: str | None
    is_verified: bool
    is_active: bool
    created_at: datetime
    stores: list[StaffStoreRead]
    recent_orders: list[StaffOrderRead]


# --------------------------------------------------------------------------- fraud lists


class FraudListEntryRead(BaseModel):
    id: int
    kind: FraudListKind
    value: str = Field(description="Stored form: a card is only ever its keyed hash or last 4")
    list_type: FraudListType
    reason: str | None
    created_by_user_id: int | None
    created_at: datetime


class FraudListEntryCreate(RequestBody):
    kind: FraudListKind
    value: str = Field(min_length=1, max_length=255, description="A card_hash is given in full")
    list_type: FraudListType
    reason: Reason
