"""`GET /admin/permissions`: the enumerated permission list with descriptions and the role
templates an administrator picks from."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.permissions import PERMISSION_DESCRIPTIONS, ROLE_TEMPLATES, Permission
from jivapay.schemas.admin import PermissionCatalogRead, PermissionRead
from jivapay.security import Principal

router = LosslessJSONRouter(prefix="/admin", tags=["admin: identity"])


@router.get("/permissions", response_model=PermissionCatalogRead, responses=problem_responses(403))
def list_permissions(
    _: Annotated[Principal, Depends(require_permission(Permission.USERS_VIEW_ALL))],
) -> PermissionCatalogRead:
    """Every permission the platform checks, with its description, and the role templates."""
    return PermissionCatalogRead(
        permissions=[
            PermissionRead(permission=p.value, description=PERMISSION_DESCRIPTIONS[p])
            for p in Permission
        ],
        templates={name: [str(g) for g in grants] for name, grants in ROLE_TEMPLATES.items()},
    )
