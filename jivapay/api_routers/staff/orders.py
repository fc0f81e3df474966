"""Staff order routes: the order search, one order with its timeline, documents and callbacks, and
the interventions (complete, cancel, open a dispute with evidence)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query

from jivapay.api_routers import uploads
from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import MAX_ID, CurrentPrincipal, DbSession, PageParams
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.api_routers.staff.common import Staff, require_order_reader
from jivapay.enums import OrderSearchSort, OrderStatus, OrderType
from jivapay.permissions import Permission
from jivapay.schemas.common import FiatAmountIn, ReasonIn
from jivapay.schemas.staff import (
    OrderSearchPage,
    StaffDisputeIn,
    StaffOrderDetail,
    StaffTransitionRead,
)
from jivapay.services import order_status_manager as osm
from jivapay.services import staff_operations, staff_queries

router = LosslessJSONRouter(tags=["staff: orders"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such order"},
    409: {"description": "Impossible transition"},
}


def _result(result: osm.TransitionResult) -> StaffTransitionRead:
    return StaffTransitionRead(
        order_id=result.public_id, status=result.status, changed=result.changed
    )


@router.get(
    "/orders",
    response_model=OrderSearchPage,
    dependencies=[Depends(require_order_reader())],
)
def search_orders(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    order_id: Annotated[str | None, Query(max_length=40, description="Public order id")] = None,
    merchant_order_id: Annotated[str | None, Query(max_length=255)] = None,
    customer_id: Annotated[str | None, Query(max_length=255)] = None,
    store_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    merchant_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    trader_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    requisite_last4: Annotated[str | None, Query(pattern=r"^[0-9]{4}$")] = None,
    amount: Annotated[FiatAmountIn | None, Query(description="Exact fiat amount")] = None,
    amount_min: Annotated[FiatAmountIn | None, Query()] = None,
    amount_max: Annotated[FiatAmountIn | None, Query()] = None,
    status: Annotated[OrderStatus | None, Query()] = None,
    order_type: Annotated[OrderType | None, Query()] = None,
    created_from: Annotated[datetime | None, Query()] = None,
    created_to: Annotated[datetime | None, Query()] = None,
    sort: Annotated[OrderSearchSort, Query()] = OrderSearchSort.CREATED_DESC,
) -> OrderSearchPage:
    """Search orders by any combination of filters; sort by time or amount."""
    search = staff_queries.OrderSearch(
        order_id=order_id,
        merchant_order_id=merchant_order_id,
        customer_id=customer_id,
        store_id=store_id,
        merchant_id=merchant_id,
        trader_id=trader_id,
        requisite_last4=requisite_last4,
        amount=amount,
        amount_min=amount_min,
        amount_max=amount_max,
        status=status,
        order_type=order_type,
        created_from=created_from,
        created_to=created_to,
        sort=sort,
    )
    items, total, capped = staff_queries.search_orders(
        session, principal=principal, search=search, limit=page.limit, offset=page.offset
    )
    return OrderSearchPage(
        items=items,
        total=total,
        limit=page.limit,
        offset=page.offset,
        total_is_lower_bound=capped,
    )


@router.get(
    "/orders/{order_id}",
    response_model=StaffOrderDetail,
    dependencies=[Depends(require_order_reader())],
    responses={404: _ERRORS[404]},
)
def get_order(order_id: str, session: DbSession, principal: CurrentPrincipal) -> StaffOrderDetail:
    """One order with its status timeline, documents (presigned) and callback deliveries."""
    return staff_queries.order_detail(session, principal=principal, public_id=order_id)


@router.post(
    "/orders/{order_id}/complete",
    response_model=StaffTransitionRead,
    dependencies=[Depends(require_permission(Permission.ORDERS_COMPLETE_ALL))],
    responses=_ERRORS,
)
def complete_order(
    order_id: str, body: ReasonIn, session: DbSession, ctx: Staff
) -> StaffTransitionRead:
    """Complete a pending or paid order: the money moves and the merchant is called back."""
    return _result(
        staff_operations.complete_order(session, ctx=ctx, public_id=order_id, reason=body.reason)
    )


@router.post(
    "/orders/{order_id}/cancel",
    response_model=StaffTransitionRead,
    dependencies=[Depends(require_permission(Permission.ORDERS_CANCEL_ALL))],
    responses=_ERRORS,
)
def cancel_order(
    order_id: str, body: ReasonIn, session: DbSession, ctx: Staff
) -> StaffTransitionRead:
    """Cancel a pending order: its hold is released and the merchant is called back."""
    return _result(
        staff_operations.cancel_order(session, ctx=ctx, public_id=order_id, reason=body.reason)
    )


@router.post(
    "/orders/{order_id}/dispute",
    response_model=StaffTransitionRead,
    dependencies=[Depends(require_permission(Permission.DISPUTES_OPEN_ALL))],
    responses=_ERRORS,
    openapi_extra=uploads.reason_and_evidence_openapi("#/components/schemas/StaffDisputeIn"),
)
def open_dispute(
    order_id: str,
    session: DbSession,
    ctx: Staff,
    body: Annotated[uploads.ReasonAndFiles, Depends(uploads.reason_and_evidence(StaffDisputeIn))],
) -> StaffTransitionRead:
    """Open a dispute: JSON `{reason}`, or multipart `reason` plus up to 5 `evidence` files."""
    return _result(
        staff_operations.open_dispute(
            session, ctx=ctx, public_id=order_id, reason=body.reason, evidence=body.files
        )
    )
