"""`GET /{role}/requisites/online-stats`: the requisites online right now (the selector's own
filter), with limits, today's turnover, open orders and last use. Built per server: the teamlead
sees the own team (`requisites:view:team`), staff every trader (`requisites:view:all`); the
service scopes the rows either way."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import MAX_ID, CurrentPrincipal, DbSession, PageParams
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.database.base import utcnow
from jivapay.enums import OnlineStatsSort, OrderType, Role
from jivapay.permissions import Permission
from jivapay.schemas.team import OnlineStatsRead
from jivapay.services import online_stats


def online_stats_router(role: Role, permission: Permission) -> APIRouter:
    """The online-stats route of `role`'s server, guarded by `permission`."""
    router = LosslessJSONRouter(prefix=f"/{Role(role).value}", tags=["online requisites"])

    @router.get(
        "/requisites/online-stats",
        response_model=OnlineStatsRead,
        dependencies=[Depends(require_permission(permission))],
        responses=problem_responses(401, 403, 422),
    )
    def read_online_stats(
        session: DbSession,
        principal: CurrentPrincipal,
        page: PageParams,
        method: Annotated[
            str | None, Query(max_length=50, description="Payment method code")
        ] = None,
        bank: Annotated[str | None, Query(max_length=50, description="Bank code")] = None,
        fiat: Annotated[str | None, Query(max_length=10, description="Fiat currency code")] = None,
        direction: Annotated[OrderType | None, Query()] = None,
        trader_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        sort: Annotated[OnlineStatsSort, Query()] = OnlineStatsSort.PRIORITY,
    ) -> OnlineStatsRead:
        """Requisites online now (active user, in work, traffic on, approved, not excluded,
        direction on), sorted by priority (the selector's order), last use or limits."""
        return online_stats.online_requisites(
            session,
            principal=principal,
            filters=online_stats.OnlineFilters(
                payment_method=method,
                bank=bank,
                fiat_currency=fiat,
                direction=direction,
                trader_id=trader_id,
            ),
            sort=sort,
            limit=page.limit,
            offset=page.offset,
            now=utcnow(),
        )

    return router
