"""Trader order endpoints: the trader's own assigned orders and their transitions, and the
in-work switch. Mounted on the trader server behind `require_role(Role.TRADER)`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query

from jivapay.api_routers import uploads
from jivapay.api_routers.deps import ClientIp, CurrentPrincipal, DbSession, PageParams
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import OrderStatus, OrderType
from jivapay.schemas.common import Page
from jivapay.schemas.orders import OrderRead, ReasonBody, TransitionRead, WorkState, WorkSwitch
from jivapay.security import Principal
from jivapay.services import document_service, order_queries, trader_service
from jivapay.services import order_status_manager as osm
from jivapay.services.document_service import FileUpload

router = LosslessJSONRouter(prefix="/trader", tags=["trader orders"])


def _actor(principal: Principal, ip: str | None) -> osm.Actor:
    return osm.Actor(
        osm.ActorKind.TRADER,
        user_id=principal.user_id,
        trader_id=principal.profile_id,
        ip_address=ip,
    )


def _result(result: osm.TransitionResult) -> TransitionRead:
    return TransitionRead(order_id=result.public_id, status=result.status, changed=result.changed)


@router.get("/orders", response_model=Page[OrderRead], responses=problem_responses(422))
def list_my_orders(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    status: Annotated[OrderStatus | None, Query()] = None,
    order_type: Annotated[OrderType | None, Query()] = None,
    created_from: Annotated[datetime | None, Query()] = None,
    created_to: Annotated[datetime | None, Query()] = None,
) -> Page[OrderRead]:
    """Orders assigned to me, newest first (`created_to` is exclusive; `created_from` after it
    is 422)."""
    filters = order_queries.OrderFilters(status, order_type, created_from, created_to)
    items, total = order_queries.list_orders(
        session, principal=principal, filters=filters, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/orders/{order_id}", response_model=OrderRead)
def get_my_order(order_id: str, session: DbSession, principal: CurrentPrincipal) -> OrderRead:
    """One of my orders (another trader's is 404)."""
    return order_queries.get_order(session, principal=principal, public_id=order_id)


@router.post(
    "/orders/{order_id}/confirm",
    response_model=TransitionRead,
    openapi_extra=uploads.RECEIPT_OPENAPI,
)
def confirm(
    order_id: str,
    session: DbSession,
    principal: CurrentPrincipal,
    receipt: Annotated[FileUpload | None, Depends(uploads.receipt_upload)],
    ip: ClientIp,
) -> TransitionRead:
    """Confirm the money arrived (PayIn) or was sent (PayOut, multipart `receipt` required)."""
    return _result(
        document_service.confirm_with_receipt(
            session, public_id=order_id, actor=_actor(principal, ip), receipt=receipt
        )
    )


@router.post("/orders/{order_id}/cancel", response_model=TransitionRead)
def cancel(
    order_id: str, body: ReasonBody, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> TransitionRead:
    """Cancel a pending order; its hold is released."""
    return _result(
        osm.cancel_order(
            session, public_id=order_id, actor=_actor(principal, ip), reason=body.reason
        )
    )


@router.post(
    "/orders/{order_id}/dispute",
    response_model=TransitionRead,
    openapi_extra=uploads.reason_and_evidence_openapi("#/components/schemas/ReasonBody"),
)
def dispute(
    order_id: str,
    session: DbSession,
    principal: CurrentPrincipal,
    body: Annotated[uploads.ReasonAndFiles, Depends(uploads.reason_and_evidence(ReasonBody))],
    ip: ClientIp,
) -> TransitionRead:
    """Open a dispute: JSON `{reason}`, or multipart `reason` plus up to 5 `evidence` files."""
    return _result(
        document_service.dispute_with_evidence(
            session,
            public_id=order_id,
            actor=_actor(principal, ip),
            reason=body.reason,
            evidence=body.files,
        )
    )


@router.post("/work", response_model=WorkState)
def set_work(
    body: WorkSwitch, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> WorkState:
    """Switch my traffic on or off; a repeat answers `changed: false`."""
    changed = trader_service.set_in_work(
        session, principal=principal, in_work=body.in_work, ip_address=ip
    )
    return WorkState(in_work=body.in_work, changed=changed)
