"""`POST /{role}/password`: a signed-in user changes their own password (current + new).

One factory for every role server; rate-limited like the login route, since it checks a password.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status
from sqlalchemy.orm import Session

from jivapay.api_routers.auth import require_role
from jivapay.api_routers.deps import client_ip
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.database.utils import db_session_dependency
from jivapay.enums import Role
from jivapay.middleware.rate_limiting import KeyKind, rate_limit
from jivapay.schemas.admin import OwnPasswordChange
from jivapay.security import Principal
from jivapay.services import user_admin

_RESPONSES = problem_responses(
    422,
    429,
    described={
        422: "Wrong current password, or a new one outside 8-1024 characters",
        429: "Too many attempts",
    },
)


def password_router(role: Role) -> APIRouter:
    """The own-password route of `role`'s server."""
    role = Role(role)
    router = LosslessJSONRouter(tags=["auth"])
    guard = Depends(require_role(role))
    session_dep = Depends(db_session_dependency, scope="function")

    # Defaults rather than `Annotated`: postponed annotations cannot see the local `role`.
    @router.post(
        f"/{role.value}/password",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=_RESPONSES,
        # Like a login, per IP and per account: a stolen session guessing the current password
        # from many addresses is stopped too (the guard first, so the principal is known).
        dependencies=[
            guard,
            Depends(rate_limit("RATE_LIMIT_LOGIN", key=KeyKind.IP)),
            Depends(rate_limit("RATE_LIMIT_LOGIN", key=KeyKind.PRINCIPAL)),
        ],
    )
    def change_own_password(
        request: Request,
        body: OwnPasswordChange,
        principal: Principal = guard,
        session: Session = session_dep,
    ) -> None:
        """Change your own password: the current one must match, the new one must differ."""
        user_admin.change_own_password(
            session,
            principal=principal,
            current_password=body.current_password,
            new_password=body.new_password,
            ip_address=client_ip(request),
        )

    return router
