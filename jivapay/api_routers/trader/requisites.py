"""The trader's own requisites: register, list, read, change settings, archive. Mounted on the trader
server behind `require_role(Role.TRADER)`; another trader's requisite is 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, status

from jivapay.api_routers.deps import ClientIp, CurrentPrincipal, DbSession, PageParams, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import OrderType, RequisiteStatus
from jivapay.schemas.common import Page
from jivapay.schemas.requisites import (
    RequisiteChanged,
    RequisiteCreate,
    RequisiteRead,
    RequisiteSettingsUpdate,
)
from jivapay.security import Principal
from jivapay.services import requisite_service as rs

router = LosslessJSONRouter(prefix="/trader/requisites", tags=["trader requisites"])


def _actor(principal: Principal, ip: str | None) -> rs.Actor:
    return rs.Actor(user_id=principal.user_id, ip_address=ip)


def _changed(
    session: DbSession, principal: Principal, requisite_id: int, changed: bool
) -> RequisiteChanged:
    result: RequisiteChanged = rs.get_requisite(
        session,
        principal=principal,
        requisite_id=requisite_id,
        model=RequisiteChanged,
        changed=changed,
    )
    return result


@router.get("", response_model=Page[RequisiteRead], responses=problem_responses(422))
def list_my_requisites(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    status_: Annotated[RequisiteStatus | None, Query(alias="status")] = None,
    fiat_currency: Annotated[str | None, Query(min_length=1, max_length=10)] = None,
    direction: Annotated[OrderType | None, Query(description="payin or payout")] = None,
) -> Page[RequisiteRead]:
    """My requisites, newest first, with limits and today's usage."""
    filters = rs.RequisiteFilters(status=status_, fiat_currency=fiat_currency, direction=direction)
    items, total = rs.list_requisites(
        session, principal=principal, filters=filters, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    response_model=RequisiteRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(404, 409, 422),
)
def create_requisite(
    body: RequisiteCreate, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> RequisiteRead:
    """Register a card or account; it takes no orders until staff approve it (`pending_review`)."""
    return rs.create_requisite(session, principal=principal, data=body, actor=_actor(principal, ip))


@router.get("/{requisite_id}", response_model=RequisiteRead, responses=problem_responses(404, 422))
def get_my_requisite(
    requisite_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> RequisiteRead:
    """One of my requisites (the number masked)."""
    result: RequisiteRead = rs.get_requisite(
        session, principal=principal, requisite_id=requisite_id
    )
    return result


@router.patch(
    "/{requisite_id}/settings",
    response_model=RequisiteChanged,
    responses=problem_responses(404, 409, 422),
)
def update_my_requisite_settings(
    requisite_id: PathId,
    body: RequisiteSettingsUpdate,
    session: DbSession,
    principal: CurrentPrincipal,
    ip: ClientIp,
) -> RequisiteChanged:
    """Change directions and limits; only the fields sent change, `null` clears an optional limit."""
    changed = rs.update_settings(
        session,
        principal=principal,
        requisite_id=requisite_id,
        changes=body,
        actor=_actor(principal, ip),
    )
    return _changed(session, principal, requisite_id, changed)


@router.post(
    "/{requisite_id}/archive",
    response_model=RequisiteChanged,
    responses=problem_responses(404, 422),
)
def archive_my_requisite(
    requisite_id: PathId, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> RequisiteChanged:
    """Retire a requisite for good (terminal); orders already assigned to it finish."""
    changed = rs.set_status(
        session,
        principal=principal,
        requisite_id=requisite_id,
        status=RequisiteStatus.ARCHIVED,
        reason="archived by the trader",
        actor=_actor(principal, ip),
    )
    return _changed(session, principal, requisite_id, changed)
