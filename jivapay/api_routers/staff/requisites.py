"""Requisite moderation for staff (admin and support servers; the grant decides): the list with the
moderation queue (`status=pending_review`), one requisite with an audited reveal of its number, the
status machine, settings and exclusion from distribution.

`router_for(Role.ADMIN)` and `router_for(Role.SUPPORT)` build the same routes under each prefix.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import MAX_ID, ClientIp, DbSession, PageParams, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import OrderType, RequisiteStatus, Role
from jivapay.permissions import Permission, ensure_permission
from jivapay.schemas.common import Page
from jivapay.schemas.requisites import (
    RequisiteStaffChanged,
    RequisiteStaffRead,
    RequisiteStaffSettingsUpdate,
    RequisiteStatusChange,
)
from jivapay.security import Principal
from jivapay.services import requisite_service as rs

Viewer = Annotated[Principal, Depends(require_permission(Permission.REQUISITES_VIEW_ALL))]
Moderator = Annotated[Principal, Depends(require_permission(Permission.REQUISITES_MODERATE_ALL))]
Editor = Annotated[Principal, Depends(require_permission(Permission.REQUISITES_EDIT_ALL))]


def _actor(principal: Principal, ip: str | None) -> rs.Actor:
    return rs.Actor(user_id=principal.user_id, ip_address=ip)


def _changed(
    session: DbSession, principal: Principal, requisite_id: int, changed: bool
) -> RequisiteStaffChanged:
    result: RequisiteStaffChanged = rs.get_requisite(
        session,
        principal=principal,
        requisite_id=requisite_id,
        model=RequisiteStaffChanged,
        changed=changed,
    )
    return result


def router_for(role: Role) -> APIRouter:
    """The staff requisite routes under `/{role}`."""
    router = LosslessJSONRouter(prefix=f"/{role.value}/requisites", tags=["requisite moderation"])

    @router.get("", response_model=Page[RequisiteStaffRead], responses=problem_responses(422))
    def list_requisites(
        session: DbSession,
        principal: Viewer,
        page: PageParams,
        status_: Annotated[
            RequisiteStatus | None,
            Query(alias="status", description="`pending_review` is the moderation queue"),
        ] = None,
        trader_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        fiat_currency: Annotated[str | None, Query(min_length=1, max_length=10)] = None,
        bank: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
        payment_method: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
        direction: Annotated[OrderType | None, Query(description="payin or payout")] = None,
        last4: Annotated[str | None, Query(pattern=r"^[0-9]{1,4}$")] = None,
        excluded: Annotated[bool | None, Query(description="excluded from distribution")] = None,
    ) -> Page[RequisiteStaffRead]:
        """Every trader's requisites (numbers masked), newest first."""
        filters = rs.RequisiteFilters(
            status=status_,
            fiat_currency=fiat_currency,
            direction=direction,
            trader_id=trader_id,
            bank=bank,
            payment_method=payment_method,
            last4=last4,
            excluded=excluded,
        )
        items, total = rs.list_requisites(
            session,
            principal=principal,
            filters=filters,
            limit=page.limit,
            offset=page.offset,
            staff_view=True,
        )
        return Page(items=items, total=total, limit=page.limit, offset=page.offset)

    @router.get(
        "/{requisite_id}", response_model=RequisiteStaffRead, responses=problem_responses(404, 422)
    )
    def get_requisite(
        requisite_id: PathId,
        session: DbSession,
        principal: Viewer,
        ip: ClientIp,
        reveal: Annotated[
            bool,
            Query(description="Show the full number (needs requisites:moderate:all; audited)"),
        ] = False,
    ) -> RequisiteStaffRead:
        """One requisite; the full number only on request, with the moderation grant."""
        number = None
        if reveal:
            ensure_permission(principal, Permission.REQUISITES_MODERATE_ALL)
            number = rs.reveal_number(
                session,
                principal=principal,
                requisite_id=requisite_id,
                actor=_actor(principal, ip),
            )
        result: RequisiteStaffRead = rs.get_requisite(
            session,
            principal=principal,
            requisite_id=requisite_id,
            model=RequisiteStaffRead,
            number=number,
        )
        return result

    @router.post(
        "/{requisite_id}/status",
        response_model=RequisiteStaffChanged,
        responses=problem_responses(404, 409, 422),
    )
    def change_status(
        requisite_id: PathId,
        body: RequisiteStatusChange,
        session: DbSession,
        principal: Moderator,
        ip: ClientIp,
    ) -> RequisiteStaffChanged:
        """Approve, block, unblock or archive (terminal); open orders of a blocked one finish."""
        changed = rs.set_status(
            session,
            principal=principal,
            requisite_id=requisite_id,
            status=body.status,
            reason=body.reason,
            actor=_actor(principal, ip),
        )
        return _changed(session, principal, requisite_id, changed)

    @router.patch(
        "/{requisite_id}/settings",
        response_model=RequisiteStaffChanged,
        responses=problem_responses(404, 409, 422),
    )
    def update_settings(
        requisite_id: PathId,
        body: RequisiteStaffSettingsUpdate,
        session: DbSession,
        principal: Editor,
        ip: ClientIp,
    ) -> RequisiteStaffChanged:
        """Directions, limits and exclusion from distribution; only the fields sent change."""
        changed = rs.update_settings(
            session,
            principal=principal,
            requisite_id=requisite_id,
            changes=body,
            actor=_actor(principal, ip),
        )
        return _changed(session, principal, requisite_id, changed)

    return router
