"""Store shapes of the merchant API and of the staff store controls.

`StoreRead` never carries a secret: the private API key shows as its last four characters and the
callback secret not at all. The secrets appear once, in `StoreCreatedRead`, `StoreKeysRead` and
`CallbackSecretRead`, answered by create and rotate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from jivapay.schemas.common import FiatAmountIn, HttpUrlIn, Money, PercentIn, RequestBody

MAX_TTL_MINUTES = 24 * 60

# Fields a merchant may never set: the admin's switches, what orders were priced in, and secrets.
MERCHANT_READ_ONLY_FIELDS = frozenset(
    {
        "trafic_access",
        "access",
        "fiat_currency",
        "crypto_currency",
        "commission",
        "commission_payin",
        "commission_payout",
        "public_api_key",
        "private_api_key",
        "callback_secret",
    }
)


CallbackUrl = HttpUrlIn
CurrencyCode = Annotated[str, Field(min_length=1, max_length=10, pattern=r"^[A-Za-z0-9]+$")]
StoreName = Annotated[str, Field(min_length=1, max_length=200)]
TtlMinutes = Annotated[int, Field(ge=1, le=MAX_TTL_MINUTES, strict=True)]


def _limits_ordered(lower: Any, upper: Any) -> None:
    if lower is not None and upper is not None and lower > upper:
        raise ValueError("lower_limit must not exceed upper_limit")


# --------------------------------------------------------------------------- requests


class StoreCreate(RequestBody):
    """A new store. It starts with `access` on, `trafic_access` off and no commission."""

    store_name: StoreName
    fiat_currency: CurrencyCode = Field(examples=["RUB"])
    crypto_currency: CurrencyCode = Field(examples=["USDT"])
    lower_limit: FiatAmountIn = Field(examples=["100.00"])
    upper_limit: FiatAmountIn = Field(examples=["100000.00"])
    callback_url: CallbackUrl | None = None
    pay_in_enabled: StrictBool = True
    pay_out_enabled: StrictBool = False
    gateway_require_customer_id_param: StrictBool = False
    gateway_require_amount_param: StrictBool = True
    require_payer_receipt: StrictBool = False
    order_ttl_minutes: TtlMinutes = 15

    @model_validator(mode="before")
    @classmethod
    def _refuse_admin_fields(cls, data: Any) -> Any:
        _refuse(data, MERCHANT_READ_ONLY_FIELDS - {"fiat_currency", "crypto_currency"})
        return data

    @model_validator(mode="after")
    def _check_limits(self) -> StoreCreate:
        _limits_ordered(self.lower_limit, self.upper_limit)
        return self


class StoreUpdate(RequestBody):
    """What a merchant may change on an own store (every field optional)."""

    store_name: StoreName | None = None
    lower_limit: FiatAmountIn | None = None
    upper_limit: FiatAmountIn | None = None
    callback_url: CallbackUrl | None = Field(default=None, description="`null` removes it")
    pay_in_enabled: StrictBool | None = None
    pay_out_enabled: StrictBool | None = None
    gateway_require_customer_id_param: StrictBool | None = None
    gateway_require_amount_param: StrictBool | None = None
    require_payer_receipt: StrictBool | None = None
    order_ttl_minutes: TtlMinutes | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_admin_fields(cls, data: Any) -> Any:
        _refuse(data, MERCHANT_READ_ONLY_FIELDS)
        return data

    @model_validator(mode="after")
    def _check_limits(self) -> StoreUpdate:
        _limits_ordered(self.lower_limit, self.upper_limit)
        return self


class StoreAdminUpdate(RequestBody):
    """What staff may change on any store; `trafic_access` also needs `stores:traffic:all`."""

    trafic_access: StrictBool | None = None
    access: StrictBool | None = None
    lower_limit: FiatAmountIn | None = None
    upper_limit: FiatAmountIn | None = None
    order_ttl_minutes: TtlMinutes | None = None
    pay_in_enabled: StrictBool | None = None
    pay_out_enabled: StrictBool | None = None
    gateway_require_customer_id_param: StrictBool | None = None
    gateway_require_amount_param: StrictBool | None = None
    require_payer_receipt: StrictBool | None = None

    @model_validator(mode="after")
    def _check_limits(self) -> StoreAdminUpdate:
        _limits_ordered(self.lower_limit, self.upper_limit)
        return self


class StoreCommissionIn(RequestBody):
    commission_payin: PercentIn = Field(examples=["4.5"])
    commission_payout: PercentIn = Field(examples=["2.5"])


def _refuse(data: Any, fields: frozenset[str]) -> None:
    if isinstance(data, dict):
        bad = sorted(fields & set(data))
        if bad:
            raise ValueError(
                f"{', '.join(bad)} cannot be set by the merchant "
                "(traffic, access, currencies and commissions are set by an admin; "
                "keys and the callback secret by their rotate routes)"
            )


# --------------------------------------------------------------------------- responses


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class StoreCommissionRead(_Read):
    commission_payin: Money
    commission_payout: Money
    since: datetime


class StoreRead(_Read):
    id: int
    merchant_id: int
    store_name: str
    fiat_currency: str
    crypto_currency: str
    lower_limit: Money
    upper_limit: Money
    public_api_key: str
    private_api_key_last4: str
    callback_url: str | None
    callbacks_disabled_at: datetime | None
    pay_in_enabled: bool
    pay_out_enabled: bool
    access: bool
    trafic_access: bool
    gateway_require_customer_id_param: bool
    gateway_require_amount_param: bool
    require_payer_receipt: bool
    order_ttl_minutes: int
    commission: StoreCommissionRead | None = Field(description="The rates new orders get")
    takes_orders: bool = Field(description="Whether the gateway accepts orders for this store now")
    not_live_reasons: list[str] = Field(
        description="Why it does not: access_disabled, traffic_disabled, commission_missing"
    )
    keys_rotated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class StoreChangeRead(StoreRead):
    changed: bool


class StoreCreatedRead(StoreRead):
    """The new store with its secrets: shown this once, never again."""

    private_api_key: str
    callback_secret: str


class StoreKeysRead(_Read):
    """A new key pair: the private key is shown this once; the old pair stopped working."""

    store_id: int
    public_api_key: str
    private_api_key: str
    keys_rotated_at: datetime


class CallbackSecretRead(_Read):
    """A new callback signing secret, shown this once; it signs every attempt from now on."""

    store_id: int
    callback_secret: str


class StoreCommissionChangeRead(StoreCommissionRead):
    store_id: int
    changed: bool
