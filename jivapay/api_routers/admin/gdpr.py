"""Data-subject requests on the admin server: export everything about a person, anonymise a
person, and remove a store customer's data from closed orders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import ClientIp, DbSession, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.permissions import Permission
from jivapay.schemas.admin import AnonymizeRead, CustomerAnonymize, CustomerAnonymizeRead
from jivapay.schemas.common import ReasonIn
from jivapay.security import Principal
from jivapay.services import gdpr

router = LosslessJSONRouter(prefix="/admin", tags=["admin: GDPR"])

CanExport = Annotated[Principal, Depends(require_permission(Permission.USERS_EXPORT_ALL))]
CanAnonymize = Annotated[Principal, Depends(require_permission(Permission.USERS_ANONYMIZE_ALL))]


@router.get("/users/{user_id}/export", responses=problem_responses(403, 404))
def export_user(
    user_id: PathId, session: DbSession, principal: CanExport, ip: ClientIp
) -> dict[str, Any]:
    """A JSON bundle of everything stored about the person (numbers masked). Audited."""
    return gdpr.export_user(session, actor=principal, user_id=user_id, ip_address=ip)


@router.post(
    "/users/{user_id}/anonymize",
    response_model=AnonymizeRead,
    responses=problem_responses(403, 404, 409),
)
def anonymize_user(
    user_id: PathId, body: ReasonIn, session: DbSession, principal: CanAnonymize, ip: ClientIp
) -> AnonymizeRead:
    """Replace the person's data, keep the money history; 409 with open orders or frozen money."""
    return gdpr.anonymize_user(
        session, actor=principal, user_id=user_id, reason=body.reason, ip_address=ip
    )


@router.post(
    "/customers/anonymize",
    response_model=CustomerAnonymizeRead,
    responses=problem_responses(403, 404, 409, 422),
)
def anonymize_customer(
    body: CustomerAnonymize, session: DbSession, principal: CanAnonymize, ip: ClientIp
) -> CustomerAnonymizeRead:
    """Remove a payer's IP, names and payout numbers from the store's closed orders."""
    return gdpr.anonymize_customer(
        session,
        actor=principal,
        store_id=body.store_id,
        customer_id=body.customer_id,
        ip_address=ip,
    )
