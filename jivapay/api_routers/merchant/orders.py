"""Merchant order routes: the orders of the merchant's stores from intake on (filters: store,
status including the intake statuses, type, dates, merchant order id), one order, and the
merchant's cancel and dispute (with up to 5 evidence files, as at the gateway). Another merchant's
order is 404."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query

from jivapay.api_routers import uploads
from jivapay.api_routers.deps import MAX_ID, ClientIp, CurrentPrincipal, DbSession, PageParams
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.database.base import as_utc
from jivapay.enums import MerchantOrderStatus, OrderType
from jivapay.schemas.common import Page
from jivapay.schemas.merchant import MerchantOrderChangeRead, MerchantOrderRead
from jivapay.schemas.orders import ReasonBody
from jivapay.security import Principal
from jivapay.services import gateway_service, order_queries
from jivapay.utils.exceptions import ValidationFailed

router = LosslessJSONRouter(prefix="/merchant/orders", tags=["merchant orders"])


@router.get("", response_model=Page[MerchantOrderRead], responses=problem_responses(422))
def list_orders(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    store_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status: MerchantOrderStatus | None = None,
    order_type: OrderType | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    merchant_order_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> Page[MerchantOrderRead]:
    """My stores' orders, newest first (`created_to` is exclusive)."""
    if created_from and created_to and as_utc(created_from) > as_utc(created_to):
        raise ValidationFailed("created_from must not be after created_to", code="bad_period")
    filters = order_queries.MerchantOrderFilters(
        store_id, status, order_type, created_from, created_to, merchant_order_id
    )
    items, total = order_queries.list_merchant_orders(
        session, principal=principal, filters=filters, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/{order_id}", response_model=MerchantOrderRead, responses=problem_responses(404))
def get_order(order_id: str, session: DbSession, principal: CurrentPrincipal) -> MerchantOrderRead:
    return order_queries.get_merchant_order(session, principal=principal, public_id=order_id)


def _changed(
    session: DbSession, principal: Principal, order_id: str, before: MerchantOrderStatus
) -> MerchantOrderChangeRead:
    view = order_queries.get_merchant_order(session, principal=principal, public_id=order_id)
    return MerchantOrderChangeRead(**view.model_dump(), changed=view.status != before)


@router.post(
    "/{order_id}/cancel",
    response_model=MerchantOrderChangeRead,
    responses=problem_responses(404, 409, 422),
)
def cancel_order(
    order_id: str,
    session: DbSession,
    principal: CurrentPrincipal,
    ip: ClientIp,
    data: ReasonBody | None = None,
) -> MerchantOrderChangeRead:
    """Cancel an order still at intake or pending; a PayOut's hold is released."""
    incoming, order = order_queries.find_merchant_order(
        session, principal=principal, public_id=order_id
    )
    before = MerchantOrderStatus(order.status if order is not None else incoming.status)
    gateway_service.cancel_by_store(
        session,
        store_id=incoming.store_id,
        public_id=order_id,
        reason=data.reason if data else None,
        user_id=principal.user_id,
        ip_address=ip,
    )
    return _changed(session, principal, order_id, before)


@router.post(
    "/{order_id}/dispute",
    response_model=MerchantOrderChangeRead,
    responses=problem_responses(404, 409, 413, 415, 422),
    openapi_extra=uploads.reason_and_evidence_openapi("#/components/schemas/ReasonBody"),
)
def dispute_order(
    order_id: str,
    session: DbSession,
    principal: CurrentPrincipal,
    data: Annotated[uploads.ReasonAndFiles, Depends(uploads.reason_and_evidence(ReasonBody))],
    ip: ClientIp,
) -> MerchantOrderChangeRead:
    """Open a dispute: JSON `{reason}`, or multipart `reason` plus up to 5 `evidence` files."""
    incoming, order = order_queries.find_merchant_order(
        session, principal=principal, public_id=order_id
    )
    before = MerchantOrderStatus(order.status if order is not None else incoming.status)
    gateway_service.dispute_by_store(
        session,
        store_id=incoming.store_id,
        public_id=order_id,
        reason=data.reason,
        evidence=data.files,
        user_id=principal.user_id,
        ip_address=ip,
    )
    return _changed(session, principal, order_id, before)
