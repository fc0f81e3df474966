"""Requisite shapes of the trader and staff APIs: create, settings updates, status changes, and the
read shape with its limits and live usage (today's turnover, open orders, last use)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, model_validator

from jivapay.enums import RequisiteStatus
from jivapay.schemas.common import FiatAmountIn, FiatLimitIn, Money, RequestBody

# The longest rolling window of a requisite's turnover limit (the counters keep that much).
MAX_TURNOVER_WINDOW_MINUTES = 7 * 24 * 60
WindowMinutes = Annotated[int, Field(ge=1, le=MAX_TURNOVER_WINDOW_MINUTES, strict=True)]
ConcurrentOrders = Annotated[int, Field(ge=1, le=1000, strict=True)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]


class HolderIn(RequestBody):
    first_name: Name
    last_name: Name
    middle_name: Name | None = None


class RequisiteSettingsFields(RequestBody):
    """Directions and limits; in an update every field is optional and `null` clears a limit."""

    pay_in: StrictBool | None = None
    pay_out: StrictBool | None = None
    lower_limit: FiatLimitIn | None = None
    upper_limit: FiatAmountIn | None = None
    total_limit: FiatAmountIn | None = Field(
        default=None, description="Turnover allowed within the rolling window"
    )
    turnover_limit_minutes: WindowMinutes | None = Field(
        default=None, description="The rolling window of `total_limit`, in minutes"
    )
    turnover_day_max: FiatAmountIn | None = Field(
        default=None, description="Turnover allowed per day in the trader's time zone"
    )
    max_concurrent_orders: ConcurrentOrders | None = None


class RequisiteSettingsUpdate(RequisiteSettingsFields):
    """`PATCH /trader/requisites/{id}/settings`: only the fields sent change."""


class RequisiteStaffSettingsUpdate(RequisiteSettingsFields):
    """`PATCH /{staff}/requisites/{id}/settings`: the trader's fields plus the exclusion switch."""

    is_excluded_from_distribution: StrictBool | None = None
    reason: str | None = Field(default=None, min_length=1, max_length=2000)


class RequisiteCreate(RequisiteSettingsFields):
    fiat_currency: str = Field(min_length=1, max_length=10, description="Fiat code, e.g. RUB")
    payment_method: str = Field(min_length=1, max_length=50, description="Method code, e.g. card")
    bank: str = Field(min_length=1, max_length=50, description="Bank code, e.g. sberbank")
    number: str = Field(
        min_length=1,
        max_length=64,
        description="Digits only; a card passes the Luhn check, an account has 10-30 digits",
    )
    holder: HolderIn | None = Field(default=None, description="A new holder of the requisite")
    owner_id: int | None = Field(default=None, description="An existing holder of mine")
    upper_limit: FiatAmountIn = Field(description="Largest single order in fiat")

    @model_validator(mode="after")
    def _one_owner(self) -> RequisiteCreate:
        if (self.holder is None) == (self.owner_id is None):
            raise ValueError("give exactly one of `holder` (a new holder) or `owner_id`")
        return self


class RequisiteStatusChange(RequestBody):
    status: RequisiteStatus
    reason: str = Field(min_length=1, max_length=2000)


class RequisiteSettingsRead(BaseModel):
    pay_in: bool
    pay_out: bool
    lower_limit: Money
    upper_limit: Money
    total_limit: Money | None
    turnover_limit_minutes: int | None
    turnover_day_max: Money | None
    max_concurrent_orders: int | None


class RequisiteUsageRead(BaseModel):
    turnover_today: Money = Field(
        description="Fiat of open and completed orders today (trader's day)"
    )
    turnover_window: Money = Field(description="Fiat of open and completed orders in the window")
    open_orders: int
    last_used_at: datetime | None


class RequisiteRead(BaseModel):
    id: int
    trader_id: int
    status: RequisiteStatus
    fiat_currency: str
    payment_method: str
    bank: str
    number_masked: str
    owner_id: int
    holder_name: str
    distribution_weight: int
    is_excluded_from_distribution: bool
    settings: RequisiteSettingsRead
    usage: RequisiteUsageRead
    created_at: datetime
    updated_at: datetime


class RequisiteStaffRead(RequisiteRead):
    number: str | None = Field(
        default=None,
        description="The full number: only with `reveal=true` and `requisites:moderate:all`",
    )


class RequisiteChanged(RequisiteRead):
    changed: bool


class RequisiteStaffChanged(RequisiteStaffRead):
    changed: bool
