"""Reference data on the admin server: `GET/POST /admin/reference/{kind}` and
`PATCH /admin/reference/{kind}/{id}` for countries, fiat and crypto currencies, banks, payment
methods, bank-methods (which bank offers which method in which fiat) and time zones. Rows are
deactivated, never deleted; each kind's body is validated by its own schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Depends, Query, status
from pydantic import BaseModel, ValidationError

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import ClientIp, DbSession, PageParams, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import ReferenceKindName
from jivapay.permissions import Permission
from jivapay.schemas.admin import ReferenceChanged
from jivapay.schemas.common import Page
from jivapay.security import Principal
from jivapay.services import reference_admin
from jivapay.utils.exceptions import ValidationFailed

router = LosslessJSONRouter(prefix="/admin/reference", tags=["admin: reference data"])

CanView = Annotated[Principal, Depends(require_permission(Permission.REFERENCE_VIEW_ALL))]
CanEdit = Annotated[Principal, Depends(require_permission(Permission.REFERENCE_EDIT_ALL))]
KindPath = ReferenceKindName


def _parse(schema: type[BaseModel], body: Any) -> BaseModel:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ValidationFailed("invalid request body", extra={"errors": errors}) from None


@router.get(
    "/{kind}", response_model=Page[dict[str, Any]], responses=problem_responses(403, 404, 422)
)
def list_reference(
    kind: KindPath,
    session: DbSession,
    _: CanView,
    page: PageParams,
    active: bool | None = None,
    search: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> Page[dict[str, Any]]:
    """Rows of one kind, by id."""
    return reference_admin.list_rows(
        session,
        kind=reference_admin.kind_of(kind),
        active=active,
        search=search,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/{kind}",
    response_model=ReferenceChanged,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(403, 404, 409, 422),
)
def create_reference(
    kind: KindPath,
    session: DbSession,
    principal: CanEdit,
    ip: ClientIp,
    body: Annotated[dict[str, Any], Body()],
) -> ReferenceChanged:
    """Add a row (a duplicate code is 409, a malformed one 422)."""
    spec = reference_admin.kind_of(kind)
    return reference_admin.create_row(
        session,
        kind=spec,
        body=_parse(spec.create, body),
        actor_user_id=principal.user_id,
        ip_address=ip,
    )


@router.patch(
    "/{kind}/{row_id}", response_model=ReferenceChanged, responses=problem_responses(403, 404, 422)
)
def update_reference(
    kind: KindPath,
    row_id: PathId,
    session: DbSession,
    principal: CanEdit,
    ip: ClientIp,
    body: Annotated[dict[str, Any], Body()],
) -> ReferenceChanged:
    """Change a row's name or flags, or deactivate it (`is_active: false`); codes never change."""
    spec = reference_admin.kind_of(kind)
    return reference_admin.update_row(
        session,
        kind=spec,
        row_id=row_id,
        body=_parse(spec.update, body),
        actor_user_id=principal.user_id,
        ip_address=ip,
    )
