"""Staff callback routes: merchant callback deliveries of every store, with their attempts, and
re-sending one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import MAX_ID, DbSession, PageParams, PathId
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.api_routers.staff.common import Staff
from jivapay.enums import CallbackStatus
from jivapay.permissions import Permission
from jivapay.schemas.common import Page
from jivapay.schemas.staff import CallbackDeliveryRead
from jivapay.services import staff_operations, staff_queries

router = LosslessJSONRouter(tags=["staff: callbacks"])


@router.get(
    "/callbacks",
    response_model=Page[CallbackDeliveryRead],
    dependencies=[Depends(require_permission(Permission.CALLBACKS_VIEW_ALL))],
)
def list_callbacks(
    session: DbSession,
    page: PageParams,
    store_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    order_id: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[CallbackStatus | None, Query()] = None,
    created_from: Annotated[datetime | None, Query()] = None,
    created_to: Annotated[datetime | None, Query()] = None,
) -> Page[CallbackDeliveryRead]:
    """Deliveries of every store, newest first, with every attempt."""
    search = staff_queries.CallbackSearch(store_id, order_id, status, created_from, created_to)
    items, total = staff_queries.list_callbacks(
        session, search=search, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/callbacks/{id}/resend",
    response_model=CallbackDeliveryRead,
    dependencies=[Depends(require_permission(Permission.CALLBACKS_RESEND_ALL))],
    responses={404: {"description": "No such delivery"}, 422: {"description": "No URL"}},
)
def resend(id: PathId, session: DbSession, ctx: Staff) -> CallbackDeliveryRead:
    """Queue the delivery again now (re-enables the store's callbacks if they were disabled)."""
    staff_operations.resend_callback(session, ctx=ctx, delivery_id=id)
    return staff_queries.delivery_view(session, delivery_id=id)
