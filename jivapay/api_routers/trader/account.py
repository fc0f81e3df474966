"""The trader's account: balances and their history, profile and statistics (the own password is
`api_routers.common.password`, as on every role server). Mounted on the trader server behind
`require_role(Role.TRADER)`; everything is the caller's own."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from jivapay.api_routers.deps import ClientIp, CurrentPrincipal, DbSession, PageParams
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import BalanceKind, BalanceOperation
from jivapay.schemas.common import Page
from jivapay.schemas.traders import (
    BalanceHistoryRead,
    TraderBalancesRead,
    TraderProfileChanged,
    TraderProfileRead,
    TraderProfileUpdate,
    TraderStatisticsRead,
)
from jivapay.services import trader_account, trader_statistics

router = LosslessJSONRouter(prefix="/trader", tags=["trader account"])


@router.get("/balances", response_model=TraderBalancesRead, responses=problem_responses())
def my_balances(session: DbSession, principal: CurrentPrincipal) -> TraderBalancesRead:
    """My deposit per crypto (balance, frozen, available) and my fiat turnover."""
    return trader_account.balances(session, trader_id=principal.profile_id)


@router.get(
    "/balances/history", response_model=Page[BalanceHistoryRead], responses=problem_responses(422)
)
def my_balance_history(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    kind: Annotated[
        BalanceKind, Query(description="crypto (deposit) or fiat")
    ] = BalanceKind.CRYPTO,
    currency: Annotated[str | None, Query(min_length=1, max_length=10)] = None,
    operation: Annotated[BalanceOperation | None, Query()] = None,
    date_from: Annotated[datetime | None, Query()] = None,
    date_to: Annotated[datetime | None, Query()] = None,
) -> Page[BalanceHistoryRead]:
    """Every change of my deposit or fiat turnover, newest first."""
    trader_statistics.check_range(date_from, date_to)
    filters = trader_account.HistoryFilters(kind, currency, operation, date_from, date_to)
    items, total = trader_account.balance_history(
        session,
        trader_id=principal.profile_id,
        filters=filters,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/profile", response_model=TraderProfileRead, responses=problem_responses())
def my_profile(session: DbSession, principal: CurrentPrincipal) -> TraderProfileRead:
    """My profile: names and time zone (mine to edit); directions, limits, team, commission."""
    return trader_account.profile(session, trader_id=principal.profile_id)


@router.patch("/profile", response_model=TraderProfileChanged, responses=problem_responses(422))
def update_my_profile(
    body: TraderProfileUpdate, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> TraderProfileChanged:
    """Change my names or time zone (the time zone decides my day for daily limits)."""
    changed = trader_account.update_profile(
        session,
        trader_id=principal.profile_id,
        changes=body,
        actor_user_id=principal.user_id,
        ip_address=ip,
    )
    view = trader_account.profile(session, trader_id=principal.profile_id)
    return TraderProfileChanged(**view.model_dump(), changed=changed)


@router.get("/statistics", response_model=TraderStatisticsRead, responses=problem_responses(422))
def my_statistics(
    session: DbSession,
    principal: CurrentPrincipal,
    date_from: Annotated[
        datetime | None, Query(description="Default: 30 days before date_to")
    ] = None,
    date_to: Annotated[datetime | None, Query(description="Default: now")] = None,
) -> TraderStatisticsRead:
    """My orders created in the period (at most 366 days): counts, turnover, commission, disputes."""
    start, end = trader_statistics.period(date_from, date_to)
    return trader_statistics.order_statistics(
        session, date_from=start, date_to=end, trader_id=principal.profile_id
    )
