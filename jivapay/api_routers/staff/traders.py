"""Trader controls for staff (admin and support servers; the grant decides): the overview, one
trader's full picture, settings, the traffic switch; and, on the admin server only, the commission.

`router_for(role)` builds the shared routes under `/{role}`; `commission_router` is admin-only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from jivapay.api_routers.auth import require_any_permission, require_permission
from jivapay.api_routers.deps import ClientIp, DbSession, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import Role
from jivapay.permissions import Permission
from jivapay.schemas.traders import (
    CommissionChanged,
    CommissionSet,
    TraderDetailRead,
    TraderProfileChanged,
    TradersStatsRead,
    TraderUpdate,
    TrafficRead,
    TrafficSwitch,
)
from jivapay.security import Principal
from jivapay.services import trader_account, trader_admin, trader_statistics

Viewer = Annotated[Principal, Depends(require_permission(Permission.TRADERS_VIEW_ALL))]
Editor = Annotated[
    Principal,
    Depends(
        require_any_permission(
            Permission.TRADERS_EDIT_ALL, Permission.TRADERS_EDIT_ONE, id_param="trader_id"
        )
    ),
]
TrafficSwitcher = Annotated[Principal, Depends(require_permission(Permission.TRADERS_TRAFFIC_ALL))]
CommissionEditor = Annotated[
    Principal, Depends(require_permission(Permission.TRADER_COMMISSIONS_EDIT_ALL))
]


def _actor(principal: Principal, ip: str | None) -> trader_admin.StaffActor:
    return trader_admin.StaffActor(user_id=principal.user_id, ip_address=ip)


def router_for(role: Role) -> APIRouter:
    """The staff trader routes under `/{role}`."""
    router = LosslessJSONRouter(prefix=f"/{role.value}/traders", tags=["trader controls"])

    @router.get("/stats", response_model=TradersStatsRead, responses=problem_responses(422))
    def traders_stats(
        session: DbSession,
        principal: Viewer,
        date_from: Annotated[
            datetime | None, Query(description="Default: 30 days before date_to")
        ] = None,
        date_to: Annotated[datetime | None, Query(description="Default: now")] = None,
    ) -> TradersStatsRead:
        """Traders (active, in work, traffic on), requisites by status, orders in the period."""
        start, end = trader_statistics.period(date_from, date_to)
        return trader_admin.overview(session, date_from=start, date_to=end)

    @router.get(
        "/{trader_id:int}", response_model=TraderDetailRead, responses=problem_responses(404, 422)
    )
    def get_trader(trader_id: PathId, session: DbSession, principal: Viewer) -> TraderDetailRead:
        """Profile, team, commission history, limits, requisites (masked), balances, recent orders."""
        return trader_admin.detail(session, principal=principal, trader_id=trader_id)

    @router.patch(
        "/{trader_id:int}",
        response_model=TraderProfileChanged,
        responses=problem_responses(404, 422),
    )
    def update_trader(
        trader_id: PathId,
        body: TraderUpdate,
        session: DbSession,
        principal: Editor,
        ip: ClientIp,
    ) -> TraderProfileChanged:
        """Directions, priority (copied onto the requisites), base limits, team, time zone."""
        changed = trader_admin.update_trader(
            session, trader_id=trader_id, changes=body, actor=_actor(principal, ip)
        )
        view = trader_account.profile(session, trader_id=trader_id)
        return TraderProfileChanged(**view.model_dump(), changed=changed)

    @router.post(
        "/{trader_id}/traffic", response_model=TrafficRead, responses=problem_responses(404, 422)
    )
    def switch_traffic(
        trader_id: PathId,
        body: TrafficSwitch,
        session: DbSession,
        principal: TrafficSwitcher,
        ip: ClientIp,
    ) -> TrafficRead:
        """Stop or restart assignment to the trader at once."""
        changed = trader_admin.set_traffic(
            session,
            trader_id=trader_id,
            enabled=body.enabled,
            reason=body.reason,
            actor=_actor(principal, ip),
        )
        return TrafficRead(
            trader_id=trader_id, is_traffic_enabled_by_teamlead=body.enabled, changed=changed
        )

    return router


commission_router = LosslessJSONRouter(prefix="/admin/traders", tags=["trader controls"])


@commission_router.put(
    "/{trader_id}/commission",
    response_model=CommissionChanged,
    responses=problem_responses(404, 422),
)
def set_trader_commission(
    trader_id: PathId,
    body: CommissionSet,
    session: DbSession,
    principal: CommissionEditor,
    ip: ClientIp,
) -> CommissionChanged:
    """A new commission row: orders assigned from now on use it; open orders keep theirs."""
    return trader_admin.set_commission(
        session,
        trader_id=trader_id,
        commission_payin=body.commission_payin,
        commission_payout=body.commission_payout,
        reason=body.reason,
        actor=_actor(principal, ip),
    )
