"""Trader shapes of the trader and staff APIs: balances and their history, the profile, password
change, statistics, and the staff's view and controls of a trader."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StrictBool

from jivapay.enums import BalanceKind, BalanceOperation, OrderStatus, OrderType
from jivapay.schemas.common import FiatLimitIn, Money, PercentIn, RequestBody
from jivapay.schemas.requisites import RequisiteRead

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]


# --------------------------------------------------------------------------- balances


class DepositRead(BaseModel):
    crypto_currency: str
    balance: Money
    frozen: Money
    available: Money


class FiatTurnoverRead(BaseModel):
    fiat_currency: str
    balance: Money = Field(description="Fiat received for PayIns minus fiat paid for PayOuts")


class TraderBalancesRead(BaseModel):
    deposits: list[DepositRead]
    fiat: list[FiatTurnoverRead]


class BalanceHistoryRead(BaseModel):
    id: int
    kind: BalanceKind
    currency: str
    operation: BalanceOperation
    amount: Money = Field(description="Change of the balance")
    frozen_delta: Money | None = Field(description="Change of the frozen part (deposits only)")
    balance_after: Money
    frozen_after: Money | None
    order_id: str | None = Field(description="Public id of the order, when there is one")
    reason: str | None
    created_at: datetime


# --------------------------------------------------------------------------- profile


class TeamRead(BaseModel):
    teamlead_id: int
    name: str | None


class CommissionRead(BaseModel):
    commission_payin: Money
    commission_payout: Money
    created_at: datetime


class TraderProfileRead(BaseModel):
    id: int
    user_id: int
    email: str
    is_active: bool
    first_name: str | None
    last_name: str | None
    time_zone: str | None
    pay_in: bool
    pay_out: bool
    in_work: bool
    is_traffic_enabled_by_teamlead: bool
    trafic_priority: int
    base_lower_limit: Money | None
    base_upper_limit: Money | None
    verification_level: int
    team: TeamRead | None
    commission: CommissionRead | None = Field(description="The rates that apply to new orders")
    created_at: datetime


class TraderProfileChanged(TraderProfileRead):
    changed: bool


class TraderProfileUpdate(RequestBody):
    """`PATCH /trader/profile`: names and time zone; directions, limits, team are staff's."""

    first_name: Name | None = None
    last_name: Name | None = None
    time_zone: str | None = Field(default=None, min_length=1, max_length=64)


# --------------------------------------------------------------------------- statistics


class AmountRead(BaseModel):
    currency: str
    amount: Money


class TraderStatsGroup(BaseModel):
    order_type: OrderType
    orders: int
    by_status: dict[OrderStatus, int]
    disputes: int = Field(description="Orders of the period that were disputed at some point")
    completed_turnover_fiat: list[AmountRead]
    completed_turnover_crypto: list[AmountRead]
    commission_earned: list[AmountRead] = Field(description="Trader commission on completed orders")


class TraderStatisticsRead(BaseModel):
    date_from: datetime
    date_to: datetime
    groups: list[TraderStatsGroup]


# --------------------------------------------------------------------------- staff


class OrderBrief(BaseModel):
    order_id: str
    order_type: OrderType
    status: OrderStatus
    amount_fiat: Money
    fiat_currency: str
    amount_crypto: Money
    crypto_currency: str
    requisite_id: int
    created_at: datetime


class TraderDetailRead(BaseModel):
    profile: TraderProfileRead
    commission_history: list[CommissionRead]
    requisites: list[RequisiteRead]
    balances: TraderBalancesRead | None = Field(
        description="null unless the caller holds balances:view:all"
    )
    recent_orders: list[OrderBrief] | None = Field(
        description="null unless the caller holds orders:view:all"
    )


class TraderUpdate(RequestBody):
    """`PATCH /{staff}/traders/{id}`: only the fields sent change; `null` clears a base limit,
    the team or the time zone."""

    pay_in: StrictBool | None = None
    pay_out: StrictBool | None = None
    trafic_priority: int | None = Field(default=None, ge=0, le=1000, strict=True)
    base_lower_limit: FiatLimitIn | None = None
    base_upper_limit: FiatLimitIn | None = None
    team_lead_id: int | None = Field(default=None, ge=1, le=2**63 - 1, strict=True)
    time_zone: str | None = Field(default=None, min_length=1, max_length=64)
    reason: str | None = Field(default=None, min_length=1, max_length=2000)


class TrafficSwitch(RequestBody):
    enabled: StrictBool
    reason: str | None = Field(default=None, min_length=1, max_length=2000)


class TrafficRead(BaseModel):
    trader_id: int
    is_traffic_enabled_by_teamlead: bool
    changed: bool


class CommissionSet(RequestBody):
    commission_payin: PercentIn
    commission_payout: PercentIn
    reason: str = Field(min_length=1, max_length=2000)


class CommissionChanged(CommissionRead):
    trader_id: int
    changed: bool


class TradersStatsRead(BaseModel):
    traders: int
    active: int
    in_work: int
    traffic_enabled: int
    requisites_by_status: dict[str, int]
    orders: TraderStatisticsRead = Field(description="Orders of every trader in the period")
