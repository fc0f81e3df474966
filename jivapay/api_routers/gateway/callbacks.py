"""Gateway routes of merchant callback deliveries (store credentials):
`GET /gateway/callbacks` lists the store's deliveries with their attempts (filters `order_id`,
`status`; `limit`/`offset`), `POST /gateway/callbacks/{delivery_id}/resend` queues one again now
(and re-enables the store's callbacks if a 410 had disabled them). Another store's delivery is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from jivapay.api_routers.deps import MAX_ID, ClientIp, CurrentStore, DbSession, PageParams
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import CallbackStatus
from jivapay.schemas.callbacks import CallbackDeliveryPage, CallbackDeliveryRead
from jivapay.services import callback_service

router = LosslessJSONRouter(prefix="/gateway/callbacks", tags=["gateway", "callbacks"])
# Beyond what `responses.document_problems` adds (401, 404 on a delivery's path, 422, 429): the
# store's access may be disabled.
_PROBLEMS = problem_responses(403)


@router.get("", response_model=CallbackDeliveryPage, responses=_PROBLEMS)
def list_callbacks(
    store: CurrentStore,
    session: DbSession,
    page: PageParams,
    order_id: Annotated[
        str | None, Query(max_length=40, description="The order's public id")
    ] = None,
    status: CallbackStatus | None = None,
) -> CallbackDeliveryPage:
    return callback_service.list_deliveries(
        session,
        store_id=store.store_id,
        order_public_id=order_id,
        status=status,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/{delivery_id}/resend",
    response_model=CallbackDeliveryRead,
    responses=_PROBLEMS,
    summary="Send a callback again now",
)
def resend_callback(
    store: CurrentStore,
    session: DbSession,
    delivery_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    ip: ClientIp,
) -> CallbackDeliveryRead:
    return callback_service.store_resend(
        session,
        store_id=store.store_id,
        delivery_id=delivery_id,
        actor_user_id=None,  # the store's key, not a login
        ip_address=ip,
    )
