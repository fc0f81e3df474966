"""Staff dispute routes: the list of open (or resolved) disputes and their resolution."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import CurrentPrincipal, DbSession, PageParams
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.api_routers.staff.common import Staff
from jivapay.enums import DisputeState
from jivapay.permissions import Permission
from jivapay.schemas.common import Page
from jivapay.schemas.staff import DisputeRead, DisputeResolveIn, StaffTransitionRead
from jivapay.services import staff_operations, staff_queries

router = LosslessJSONRouter(tags=["staff: disputes"])


@router.get(
    "/disputes",
    response_model=Page[DisputeRead],
    dependencies=[Depends(require_permission(Permission.DISPUTES_VIEW_ALL))],
)
def list_disputes(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    state: Annotated[DisputeState, Query()] = DisputeState.OPEN,
) -> Page[DisputeRead]:
    """Disputed orders, newest dispute first (`state`: open, resolved or all)."""
    items, total = staff_queries.list_disputes(
        session, principal=principal, state=state, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/disputes/{order_id}/resolve",
    response_model=StaffTransitionRead,
    dependencies=[Depends(require_permission(Permission.DISPUTES_RESOLVE_ALL))],
    responses={404: {"description": "No such order"}, 409: {"description": "Not disputed"}},
)
def resolve_dispute(
    order_id: str, body: DisputeResolveIn, session: DbSession, ctx: Staff
) -> StaffTransitionRead:
    """Close a dispute: `completed` moves the money, `canceled` releases the hold."""
    result = staff_operations.resolve_dispute(
        session, ctx=ctx, public_id=order_id, outcome=body.outcome, reason=body.reason
    )
    return StaffTransitionRead(
        order_id=result.public_id, status=result.status, changed=result.changed
    )
