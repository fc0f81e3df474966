"""Shapes of the teamlead API: the team's traders and their requisites (numbers masked), the
traffic switch, order statistics, the team summary, team deposits and the online-requisite
statistics (the last also served to staff)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, StrictBool

from jivapay.enums import RequisiteStatus
from jivapay.schemas.common import Money, RequestBody


class TeamRequisiteRead(BaseModel):
    """A requisite of a team trader; the number is masked to its last 4 digits."""

    id: int
    fiat_currency: str
    payment_method: str
    bank: str
    number_masked: str
    status: RequisiteStatus
    pay_in: bool
    pay_out: bool
    lower_limit: Money
    upper_limit: Money
    total_limit: Money | None
    turnover_limit_minutes: int | None
    turnover_day_max: Money | None
    max_concurrent_orders: int | None
    open_orders: int
    last_used_at: datetime | None
    is_excluded_from_distribution: bool
    online_pay_in: bool = Field(description="Online for PayIn now (the selector would consider it)")
    online_pay_out: bool = Field(description="Online for PayOut now")


class TeamTraderRead(BaseModel):
    id: int
    user_id: int
    email: str
    first_name: str | None
    last_name: str | None
    is_active: bool
    in_work: bool = Field(description="The trader's own work switch")
    is_traffic_enabled_by_teamlead: bool = Field(description="The teamlead's traffic switch")
    pay_in: bool
    pay_out: bool
    trafic_priority: int
    base_lower_limit: Money | None
    base_upper_limit: Money | None
    requisites_total: int
    requisites_online: int = Field(description="Requisites online for at least one direction")
    open_orders: int
    online: bool = Field(description="At least one requisite online")


class TeamTraderDetail(TeamTraderRead):
    requisites: list[TeamRequisiteRead]


class TrafficSwitchIn(RequestBody):
    enabled: StrictBool


class TrafficState(BaseModel):
    trader_id: int
    is_traffic_enabled_by_teamlead: bool
    in_work: bool
    changed: bool


class TurnoverRead(BaseModel):
    """Completed orders of one direction and currency pair."""

    order_type: str
    fiat_currency: str
    crypto_currency: str
    count: int
    amount_fiat: Money
    amount_crypto: Money
    trader_commission: Money


class OrderStatsBlock(BaseModel):
    orders_total: int
    by_status: dict[str, int] = Field(description="Every order status, zero when none")
    by_type: dict[str, int]
    disputes: int = Field(description="Orders that were disputed at some point")
    conversion: Money | None = Field(
        description="Completed / assigned orders, 4 places; null without orders"
    )
    completed: list[TurnoverRead]


class Period(BaseModel):
    date_from: datetime
    date_to: datetime


class TraderStatsRead(Period):
    trader_id: int
    stats: OrderStatsBlock


class TraderOrderStats(BaseModel):
    trader_id: int
    email: str
    first_name: str | None
    last_name: str | None
    stats: OrderStatsBlock


class TeamOrderStatsRead(Period):
    totals: OrderStatsBlock
    traders: list[TraderOrderStats]


class TeamSummaryRead(Period):
    traders_total: int
    traders_active: int
    traders_in_work: int
    traders_traffic_enabled: int
    traders_online: int
    requisites_online: int
    requisites_online_pay_in: int
    requisites_online_pay_out: int
    today: OrderStatsBlock | None = Field(
        description="Orders created since 00:00 UTC; null unless the caller holds orders:view:team"
    )
    period: OrderStatsBlock | None = Field(
        description="null unless the caller holds orders:view:team"
    )


class DepositRead(BaseModel):
    crypto_currency: str
    balance: Money
    frozen: Money
    available: Money


class TraderDepositRead(DepositRead):
    trader_id: int
    email: str


class TeamBalancesRead(BaseModel):
    items: list[TraderDepositRead]
    total: int
    limit: int
    offset: int
    totals: list[DepositRead] = Field(description="The whole team's deposits per crypto currency")


class OnlineRequisiteRead(BaseModel):
    requisite_id: int
    trader_id: int
    trader_email: str
    fiat_currency: str
    payment_method: str
    bank: str
    number_masked: str
    online_pay_in: bool
    online_pay_out: bool
    priority: int
    lower_limit: Money
    upper_limit: Money
    total_limit: Money | None
    turnover_day_max: Money | None
    turnover_today: Money = Field(description="Fiat turnover today in the trader's time zone")
    open_orders: int
    max_concurrent_orders: int | None
    last_used_at: datetime | None


class OnlineSummary(BaseModel):
    requisites: int
    traders: int
    pay_in: int
    pay_out: int


class OnlineStatsRead(BaseModel):
    items: list[OnlineRequisiteRead]
    total: int
    limit: int
    offset: int
    summary: OnlineSummary
