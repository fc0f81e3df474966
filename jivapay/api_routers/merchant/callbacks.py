"""Merchant callback routes: deliveries across the merchant's stores (filters: store, order,
status) with their attempts, and a re-send of one (another merchant's delivery is 404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from jivapay.api_routers.deps import (
    MAX_ID,
    ClientIp,
    CurrentPrincipal,
    DbSession,
    PageParams,
    PathId,
)
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import CallbackStatus
from jivapay.schemas.callbacks import CallbackDeliveryRead
from jivapay.schemas.common import Page
from jivapay.services import callback_service

router = LosslessJSONRouter(prefix="/merchant/callbacks", tags=["merchant callbacks"])


@router.get("", response_model=Page[CallbackDeliveryRead], responses=problem_responses(422))
def list_callbacks(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    store_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    order_id: Annotated[str | None, Query(max_length=40, description="public order id")] = None,
    status: CallbackStatus | None = None,
) -> Page[CallbackDeliveryRead]:
    views, total = callback_service.list_merchant_deliveries(
        session,
        merchant_id=principal.profile_id,
        store_id=store_id,
        order_public_id=order_id,
        status=status,
        limit=page.limit,
        offset=page.offset,
    )
    return Page[CallbackDeliveryRead](
        items=views,
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/{delivery_id}/resend",
    response_model=CallbackDeliveryRead,
    responses=problem_responses(404, 422),
)
def resend_callback(
    delivery_id: PathId, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> CallbackDeliveryRead:
    """Send a callback again now (re-enables the store's callbacks if a 410 disabled them)."""
    store_id = callback_service.merchant_delivery_store(
        session, merchant_id=principal.profile_id, delivery_id=delivery_id
    )
    return callback_service.store_resend(
        session,
        store_id=store_id,
        delivery_id=delivery_id,
        actor_user_id=principal.user_id,
        ip_address=ip,
    )
