"""API shapes of the admin identity, configuration, reference, log and GDPR routes:
users and their grants, run-time settings, reference rows, exchange rates, audit rows, the GDPR
export and anonymisation answers, and the own-password change every role server offers."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from jivapay.enums import RateRefreshStatus, Role
from jivapay.schemas.common import CryptoAmountIn, Money, PercentIn, RequestBody

# A pragmatic address check (one @, no spaces, a dot in the domain); the real proof is a login.
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def _email(value: str) -> str:
    address = value.strip().lower()
    if len(address) > 320 or not _EMAIL_RE.match(address):
        raise ValueError("not a valid email address")
    return address


EmailIn = Annotated[str, Field(min_length=3, max_length=320), AfterValidator(_email)]
PasswordIn = Annotated[str, Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)]
NameIn = Annotated[str, Field(min_length=1, max_length=100)]


# --------------------------------------------------------------------------- permissions


class PermissionRead(BaseModel):
    permission: str
    description: str


class PermissionCatalogRead(BaseModel):
    permissions: list[PermissionRead]
    templates: dict[str, list[str]]


class GrantsRead(BaseModel):
    user_id: int
    role: Role
    permissions: list[str]


class GrantsUpdate(RequestBody):
    permissions: list[str] = Field(max_length=200)


# --------------------------------------------------------------------------- users


class TraderCommissionIn(RequestBody):
    payin_percent: PercentIn
    payout_percent: PercentIn


class UserCreate(RequestBody):
    email: EmailIn
    password: PasswordIn
    role: Role
    first_name: NameIn | None = None
    last_name: NameIn | None = None
    # merchant
    company_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    # trader
    team_lead_id: int | None = Field(default=None, ge=1, description="The teamlead's profile id")
    pay_in: bool | None = None
    pay_out: bool | None = None
    trafic_priority: int | None = Field(default=None, ge=0, le=1000)
    time_zone_id: int | None = Field(default=None, ge=1)
    commission: TraderCommissionIn | None = None
    # admin, support, teamlead
    template: str | None = Field(default=None, max_length=64)
    permissions: list[str] | None = Field(default=None, max_length=200)
    role_description: Annotated[str, Field(max_length=2000)] | None = None


class UserUpdate(RequestBody):
    """Profile fields only (email and role are not changed here); fields a role lacks are 422."""

    first_name: NameIn | None = None
    last_name: NameIn | None = None
    company_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    role_description: Annotated[str, Field(max_length=2000)] | None = None
    is_verified: bool | None = None


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    role: Role
    is_active: bool
    first_name: str | None = None
    last_name: str | None = None
    profile_id: int | None = None
    created_at: datetime
    last_login_at: datetime | None = None
    anonymized_at: datetime | None = None


class UserDetailRead(UserRead):
    profile: dict[str, Any] = Field(default_factory=dict)
    permissions: list[str] = Field(default_factory=list)


class UserStatsRead(BaseModel):
    total: int
    by_role: dict[str, dict[str, int]] = Field(
        description="Per role: active, inactive, anonymized and total"
    )


class PasswordReset(RequestBody):
    new_password: PasswordIn


class OwnPasswordChange(RequestBody):
    current_password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
    new_password: PasswordIn


class UserChanged(BaseModel):
    user: UserRead
    changed: bool


# --------------------------------------------------------------------------- settings


class SettingRead(BaseModel):
    key: str
    value_type: str
    value: Any
    default: Any
    # Inclusive bounds of a number (of each entry of a list of seconds); null where none apply.
    minimum: Any = None
    maximum: Any = None
    is_default: bool
    description: str
    updated_at: datetime | None = None
    updated_by_user_id: int | None = None


class SettingUpdate(RequestBody):
    value: Any = Field(description="Typed by the key: integer, decimal string, boolean, text, JSON")


class SettingChanged(BaseModel):
    setting: SettingRead
    changed: bool


# --------------------------------------------------------------------------- reference data


class ReferenceRead(BaseModel):
    """One reference row; which fields are present depends on the kind."""

    model_config = ConfigDict(extra="allow")

    id: int


class ReferenceChanged(BaseModel):
    item: dict[str, Any]
    changed: bool


class CountryCreate(RequestBody):
    code: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    name: NameIn


class CountryUpdate(RequestBody):
    name: NameIn | None = None


_CURRENCY_CODE = r"^[A-Z][A-Z0-9]{1,9}$"
_SLUG_CODE = r"^[a-z0-9][a-z0-9_\-]{1,49}$"


class FiatCurrencyCreate(RequestBody):
    code: str = Field(pattern=_CURRENCY_CODE, description="Upper-case code, e.g. RUB")
    name: NameIn
    symbol: Annotated[str, Field(min_length=1, max_length=8)] | None = None
    country_id: int | None = Field(default=None, ge=1)
    is_active: bool = True


class FiatCurrencyUpdate(RequestBody):
    name: NameIn | None = None
    symbol: Annotated[str, Field(min_length=1, max_length=8)] | None = None
    country_id: int | None = Field(default=None, ge=1)
    is_active: bool | None = None


class CryptoCurrencyCreate(RequestBody):
    code: str = Field(pattern=_CURRENCY_CODE, description="Upper-case code, e.g. USDT")
    name: NameIn
    network: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    is_active: bool = True


class CryptoCurrencyUpdate(RequestBody):
    name: NameIn | None = None
    network: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    is_active: bool | None = None


class BankCreate(RequestBody):
    code: str = Field(pattern=_SLUG_CODE, description="Lower-case slug, e.g. sberbank")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    country_id: int | None = Field(default=None, ge=1)
    is_active: bool = True


class BankUpdate(RequestBody):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    country_id: int | None = Field(default=None, ge=1)
    is_active: bool | None = None


class PaymentMethodCreate(RequestBody):
    code: str = Field(pattern=_SLUG_CODE, description="Lower-case slug, e.g. card")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    is_active: bool = True


class PaymentMethodUpdate(RequestBody):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    is_active: bool | None = None


class BankMethodCreate(RequestBody):
    fiat_currency_id: int = Field(ge=1)
    bank_id: int = Field(ge=1)
    payment_method_id: int = Field(ge=1)
    is_active: bool = True


class BankMethodUpdate(RequestBody):
    is_active: bool | None = None


class TimeZoneCreate(RequestBody):
    name: str = Field(min_length=1, max_length=64, description="IANA name, e.g. Europe/Moscow")
    utc_offset_minutes: int = Field(ge=-720, le=840)


class TimeZoneUpdate(RequestBody):
    utc_offset_minutes: int | None = Field(default=None, ge=-720, le=840)


# --------------------------------------------------------------------------- exchange rates


class ExchangeRateRead(BaseModel):
    crypto: str
    fiat: str
    buy_rate: Money
    sell_rate: Money
    median_rate: Money
    source: str
    updated_at: datetime
    age_seconds: int
    stale: bool


class ExchangeRateUpdate(RequestBody):
    buy_rate: CryptoAmountIn
    sell_rate: CryptoAmountIn
    median_rate: CryptoAmountIn | None = Field(
        default=None, description="Defaults to the midpoint of buy and sell"
    )


class RateRefreshRead(BaseModel):
    status: RateRefreshStatus
    updated: list[str]
    rejected: list[str]
    error: str | None = None


# --------------------------------------------------------------------------- logs and system


class AuditLogRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    user_id: int | None
    ip_address: str | None
    action: str
    target_entity: str | None
    target_id: str | None
    details: dict[str, Any]
    level: str


class WorkerPingRead(BaseModel):
    hostname: str | None
    answered_at: str | None
    round_trip_ms: Decimal


# --------------------------------------------------------------------------- GDPR


class AnonymizeRead(BaseModel):
    user_id: int
    changed: bool
    anonymized_at: datetime | None


class CustomerAnonymize(RequestBody):
    store_id: int = Field(ge=1)
    customer_id: str = Field(min_length=1, max_length=255)


class CustomerAnonymizeRead(BaseModel):
    store_id: int
    orders: int = Field(description="Orders whose payer data was removed by this request")
    changed: bool
