r"""Request and response shapes of the public gateway.

Requests forbid unknown fields and NUL characters. Money is accepted as an ASCII decimal string
(`^[0-9]+(\.[0-9]{1,N})?$`) or an exact JSON number and never goes through a float: every
server's routes parse JSON numbers straight into `Decimal` (`api_routers.routing.LosslessJSONRoute`);
"1_500", "+1500", "1e3", " 1500 " or non-ASCII digits are 422 (`schemas.common.FiatAmountIn`/
`CryptoAmountIn`), and so is "1234.567": an error, never a rounding. Responses write money as plain decimal strings ("0.00000001", never "1E-8").
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from jivapay.enums import IncomingOrderStatus, MerchantOrderStatus, OrderStatus, OrderType
from jivapay.schemas.common import CryptoAmountIn, FiatAmountIn, HttpUrlIn, IpAddressIn, refuse_nul
from jivapay.schemas.documents import DocumentRead

MoneyOut = Annotated[
    Decimal, PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json")
]
Code = Annotated[str, Field(min_length=1, max_length=50)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return refuse_nul(data)


# --------------------------------------------------------------------------- requests


class Beneficiary(_Request):
    """Who receives a PayOut: a card or account number (12-19 digits; spaces and dashes allowed)."""

    number: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=200)


class _IntakeCreate(_Request):
    merchant_order_id: str = Field(min_length=1, max_length=255)
    fiat_currency: str = Field(min_length=1, max_length=10, examples=["RUB"])
    customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    customer_ip: IpAddressIn | None = None
    return_url: HttpUrlIn | None = None
    callback_url: HttpUrlIn | None = None
    payment_method: Code | None = Field(default=None, description="payment method code")
    bank: Code | None = Field(default=None, description="bank code")


class PayInCreate(_IntakeCreate):
    """A PayIn: the payer will pay `amount_fiat` to a trader's requisite."""

    amount_fiat: FiatAmountIn = Field(examples=["1500.00"])


def _one_amount(amount: str, other: str) -> dict[str, Any]:
    return {
        "required": [amount],
        "properties": {amount: {"type": "string"}, other: {"type": "null"}},
    }


class PayOutCreate(_IntakeCreate):
    """A PayOut: exactly one of `amount_fiat` / `amount_crypto`; method, bank and beneficiary."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                _one_amount("amount_fiat", "amount_crypto"),
                _one_amount("amount_crypto", "amount_fiat"),
            ]
        }
    )

    amount_fiat: FiatAmountIn | None = Field(default=None, examples=["1500.00"])
    amount_crypto: CryptoAmountIn | None = Field(default=None, examples=["15.5"])
    beneficiary: Beneficiary | None = None


class OrderActionRequest(_Request):
    """Optional body of a store's cancel or dispute."""

    reason: str | None = Field(default=None, max_length=1000)


# --------------------------------------------------------------------------- responses


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class IntakeRead(_Read):
    """The answer to POST …/init (201), replayed as is for a repeated Idempotency-Key."""

    order_id: str
    merchant_order_id: str
    order_type: OrderType
    status: IncomingOrderStatus
    amount_fiat: MoneyOut
    fiat_currency: str
    amount_crypto: MoneyOut
    crypto_currency: str
    exchange_rate: MoneyOut
    store_commission: MoneyOut
    payment_url: str | None
    created_at: datetime


class NamedRef(_Read):
    code: str
    name: str


class RequisiteRead(_Read):
    """Where the payer sends a PayIn (full number: host-to-host integration)."""

    bank: NamedRef
    payment_method: NamedRef
    number: str
    holder_name: str


class BeneficiaryRead(_Read):
    number_masked: str
    last4: str
    name: str | None
    bank: NamedRef | None
    payment_method: NamedRef | None


class OrderStatusRead(_Read):
    order_id: str
    merchant_order_id: str
    order_type: OrderType
    status: MerchantOrderStatus
    amount_fiat: MoneyOut
    fiat_currency: str
    amount_crypto: MoneyOut
    crypto_currency: str
    exchange_rate: MoneyOut
    store_commission: MoneyOut
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    completed_at: datetime | None
    failure_reason: str | None
    cancellation_reason: str | None
    requisite: RequisiteRead | None
    beneficiary: BeneficiaryRead | None
    receipts: list[DocumentRead] = Field(
        default_factory=list, description="Receipts and dispute evidence, with presigned URLs"
    )


class PayerConfirmRead(_Read):
    order_id: str
    status: OrderStatus


class MethodBanksRead(_Read):
    payment_method: NamedRef
    banks: list[NamedRef]


class ReferenceMethodsRead(_Read):
    fiat_currency: str
    methods: list[MethodBanksRead]
