"""`GET /{role}/me`: who the bearer token belongs to, with its granted permissions."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from jivapay.api_routers.auth import require_role
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import Role
from jivapay.schemas.auth import MeRead
from jivapay.security import Principal


def me_router(role: Role) -> APIRouter:
    """The current-user route of `role`'s server."""
    role = Role(role)
    router = LosslessJSONRouter(tags=["auth"])
    guard = Depends(require_role(role))

    # A default rather than `Annotated`: postponed annotations cannot see the local `role`.
    @router.get(f"/{role.value}/me", response_model=MeRead)
    def read_me(principal: Principal = guard) -> MeRead:
        """The authenticated user."""
        return MeRead(
            id=principal.user_id,
            email=principal.email,
            role=principal.role,
            profile_id=principal.profile_id,
            permissions=list(principal.permissions),
        )

    return router
