"""Staff intake-queue routes: the incoming orders (new, retrying, manual review, failed) and the
release or rejection of orders held for fraud review."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Body, Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import MAX_ID, DbSession, PageParams
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.api_routers.staff.common import Staff
from jivapay.enums import IncomingOrderStatus, OrderType
from jivapay.permissions import Permission
from jivapay.schemas.common import Page, ReasonIn
from jivapay.schemas.staff import (
    IncomingOrderRead,
    IntakeActionRead,
    OptionalReasonIn,
)
from jivapay.services import staff_operations, staff_queries

router = LosslessJSONRouter(tags=["staff: intake queue"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such order"},
    409: {"description": "Not in manual review"},
}


@router.get(
    "/incoming-orders",
    response_model=Page[IncomingOrderRead],
    dependencies=[Depends(require_permission(Permission.INCOMING_ORDERS_VIEW_ALL))],
)
def list_incoming_orders(
    session: DbSession,
    page: PageParams,
    status: Annotated[IncomingOrderStatus | None, Query()] = None,
    order_id: Annotated[str | None, Query(max_length=40)] = None,
    store_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    order_type: Annotated[OrderType | None, Query()] = None,
    created_from: Annotated[datetime | None, Query()] = None,
    created_to: Annotated[datetime | None, Query()] = None,
) -> Page[IncomingOrderRead]:
    """The intake queue, newest first, with retries, failure reasons and fraud rules."""
    search = staff_queries.IntakeSearch(
        status, order_id, store_id, order_type, created_from, created_to
    )
    items, total = staff_queries.list_incoming(
        session, search=search, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/incoming-orders/{order_id}/release",
    response_model=IntakeActionRead,
    dependencies=[Depends(require_permission(Permission.INCOMING_ORDERS_REVIEW_ALL))],
    responses=_ERRORS,
)
def release(
    order_id: str,
    session: DbSession,
    ctx: Staff,
    body: Annotated[OptionalReasonIn | None, Body()] = None,
) -> IntakeActionRead:
    """Send an order held for review back to processing (announced to the workers on commit)."""
    reason = body.reason if body is not None else None
    r = staff_operations.release_incoming(session, ctx=ctx, public_id=order_id, reason=reason)
    return IntakeActionRead(order_id=r.public_id, status=r.status, changed=r.changed)


@router.post(
    "/incoming-orders/{order_id}/reject",
    response_model=IntakeActionRead,
    dependencies=[Depends(require_permission(Permission.INCOMING_ORDERS_REVIEW_ALL))],
    responses=_ERRORS,
)
def reject(order_id: str, body: ReasonIn, session: DbSession, ctx: Staff) -> IntakeActionRead:
    """Fail an order held for review; a PayOut's store hold is released."""
    r = staff_operations.reject_incoming(session, ctx=ctx, public_id=order_id, reason=body.reason)
    return IntakeActionRead(order_id=r.public_id, status=r.status, changed=r.changed)
