"""The teamlead's own team: traders and their masked requisites, the traffic switch,
the team's orders and statistics, and the team's deposits. Each route needs its grant
(`traders:view:team`, `traders:traffic:team`, `orders:view:team`, `balances:view:team`), and the
services scope every row to the caller's team: a trader outside it is 404.
Mounted on the teamlead server behind `require_role(Role.TEAMLEAD)`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import ClientIp, CurrentPrincipal, DbSession, PageParams, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.database.base import utcnow
from jivapay.enums import OrderStatus, OrderType
from jivapay.permissions import Permission
from jivapay.schemas.common import Page
from jivapay.schemas.orders import OrderRead
from jivapay.schemas.team import (
    TeamBalancesRead,
    TeamOrderStatsRead,
    TeamSummaryRead,
    TeamTraderDetail,
    TeamTraderRead,
    TraderStatsRead,
    TrafficState,
    TrafficSwitchIn,
)
from jivapay.services import order_queries, team_service, team_statistics

router = LosslessJSONRouter(prefix="/teamlead", tags=["teamlead"])

_VIEW_TRADERS = [Depends(require_permission(Permission.TRADERS_VIEW_TEAM))]
_VIEW_ORDERS = [Depends(require_permission(Permission.ORDERS_VIEW_TEAM))]

DateFrom = Annotated[
    datetime | None,
    Query(description="Start (inclusive, ISO 8601; default: 30 days before date_to)"),
]
DateTo = Annotated[datetime | None, Query(description="End (exclusive, ISO 8601; default: now)")]


def _period(date_from: datetime | None, date_to: datetime | None) -> team_statistics.Period:
    return team_statistics.resolve_period(date_from=date_from, date_to=date_to, now=utcnow())


@router.get(
    "/traders",
    response_model=Page[TeamTraderRead],
    dependencies=_VIEW_TRADERS,
    responses=problem_responses(401, 403, 422),
)
def list_traders(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    in_work: Annotated[bool | None, Query(description="The trader's own work switch")] = None,
    traffic_enabled: Annotated[bool | None, Query(description="The teamlead's switch")] = None,
    search: Annotated[
        str | None, Query(min_length=1, max_length=100, description="Email or name contains")
    ] = None,
) -> Page[TeamTraderRead]:
    """The traders of my team, by id."""
    items, total = team_service.list_traders(
        session,
        principal=principal,
        filters=team_service.TraderFilters(in_work, traffic_enabled, search),
        limit=page.limit,
        offset=page.offset,
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get(
    "/traders/{id}",
    response_model=TeamTraderDetail,
    dependencies=_VIEW_TRADERS,
    responses=problem_responses(401, 403, 404, 422),
)
def get_trader(id: PathId, session: DbSession, principal: CurrentPrincipal) -> TeamTraderDetail:
    """One trader of my team with its requisites (numbers masked); outside my team: 404."""
    return team_service.get_trader(session, principal=principal, trader_id=id)


@router.post(
    "/traders/{id}/traffic",
    response_model=TrafficState,
    dependencies=[Depends(require_permission(Permission.TRADERS_TRAFFIC_TEAM))],
    responses=problem_responses(401, 403, 404, 422),
)
def set_traffic(
    id: PathId,
    body: TrafficSwitchIn,
    session: DbSession,
    principal: CurrentPrincipal,
    ip: ClientIp,
) -> TrafficState:
    """Stop or restart assignment to a trader of my team at once; the trader's own work switch
    cannot override it. A repeat answers `changed: false`."""
    return team_service.set_traffic(
        session, principal=principal, trader_id=id, enabled=body.enabled, ip_address=ip
    )


@router.get(
    "/traders/{id}/stats",
    response_model=TraderStatsRead,
    dependencies=_VIEW_TRADERS + _VIEW_ORDERS,  # nothing but order figures
    responses=problem_responses(401, 403, 404, 422),
)
def trader_stats(
    id: PathId,
    session: DbSession,
    principal: CurrentPrincipal,
    date_from: DateFrom = None,
    date_to: DateTo = None,
) -> TraderStatsRead:
    """A trader's orders over a period: counts by status and type, disputes, conversion and the
    completed turnover with the commission earned (with `orders:view:team` too)."""
    return team_statistics.trader_stats(
        session, principal=principal, trader_id=id, period=_period(date_from, date_to)
    )


@router.get(
    "/orders",
    response_model=Page[OrderRead],
    dependencies=_VIEW_ORDERS,
    responses=problem_responses(401, 403, 422),
)
def list_orders(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    status: Annotated[OrderStatus | None, Query()] = None,
    order_type: Annotated[OrderType | None, Query()] = None,
    created_from: Annotated[datetime | None, Query()] = None,
    created_to: Annotated[datetime | None, Query()] = None,
) -> Page[OrderRead]:
    """The orders of my team's traders, newest first (numbers masked)."""
    filters = order_queries.OrderFilters(status, order_type, created_from, created_to)
    items, total = order_queries.list_orders(
        session, principal=principal, filters=filters, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get(
    "/orders/statistics",
    response_model=TeamOrderStatsRead,
    dependencies=_VIEW_ORDERS,
    responses=problem_responses(401, 403, 422),
)
def order_statistics(
    session: DbSession,
    principal: CurrentPrincipal,
    date_from: DateFrom = None,
    date_to: DateTo = None,
) -> TeamOrderStatsRead:
    """Team totals and a per-trader breakdown of the orders created in the period."""
    return team_statistics.team_order_stats(
        session, principal=principal, period=_period(date_from, date_to)
    )


@router.get(
    "/statistics",
    response_model=TeamSummaryRead,
    dependencies=_VIEW_TRADERS,
    responses=problem_responses(401, 403, 422),
)
def team_summary(
    session: DbSession,
    principal: CurrentPrincipal,
    date_from: DateFrom = None,
    date_to: DateTo = None,
) -> TeamSummaryRead:
    """My team now (traders in work and online, online requisites) and its orders today and over
    the period (null without `orders:view:team`)."""
    return team_statistics.team_summary(
        session, principal=principal, period=_period(date_from, date_to), now=utcnow()
    )


@router.get(
    "/balances",
    response_model=TeamBalancesRead,
    dependencies=[Depends(require_permission(Permission.BALANCES_VIEW_TEAM))],
    responses=problem_responses(401, 403, 422),
)
def team_balances(
    session: DbSession, principal: CurrentPrincipal, page: PageParams
) -> TeamBalancesRead:
    """My team's deposits per trader and crypto (balance, frozen, available) and their totals."""
    return team_service.team_balances(
        session, principal=principal, limit=page.limit, offset=page.offset
    )
