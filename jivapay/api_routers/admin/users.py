"""User administration on the admin server: create users of every role, list and read them, edit
profiles, (de)activate, reset passwords, edit grants, and counts per role.

Routes whose target role is only known from the body or the target user (create, edit, password,
grants) are guarded by the admin role here and by `users:manage:{role}` in `services.user_admin`;
the others by a fixed permission."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, status

from jivapay.api_routers.auth import require_any_permission, require_permission
from jivapay.api_routers.deps import ClientIp, DbSession, PageParams, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import Role
from jivapay.permissions import Permission
from jivapay.schemas.admin import (
    GrantsRead,
    GrantsUpdate,
    PasswordReset,
    UserChanged,
    UserCreate,
    UserDetailRead,
    UserRead,
    UserStatsRead,
    UserUpdate,
)
from jivapay.schemas.common import Page
from jivapay.security import Principal
from jivapay.services import user_admin

router = LosslessJSONRouter(prefix="/admin/users", tags=["admin: identity"])

CanView = Annotated[Principal, Depends(require_permission(Permission.USERS_VIEW_ALL))]
CanDeactivate = Annotated[Principal, Depends(require_permission(Permission.USERS_DEACTIVATE_ALL))]
# The route admits anyone who manages some role; the service then checks `users:manage:{role}` of
# the user concerned (the role is known only once the body or the target row is read).
CanManageSomeRole = Annotated[
    Principal,
    Depends(
        require_any_permission(
            Permission.USERS_MANAGE_ADMIN,
            Permission.USERS_MANAGE_SUPPORT,
            Permission.USERS_MANAGE_TEAMLEAD,
            Permission.USERS_MANAGE_MERCHANT,
            Permission.USERS_MANAGE_TRADER,
        )
    ),
]


@router.post(
    "",
    response_model=UserDetailRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(403, 409, 422),
)
def create_user(
    body: UserCreate, session: DbSession, principal: CanManageSomeRole, ip: ClientIp
) -> UserDetailRead:
    """Create a user of any role with its profile (needs `users:manage:{role}`; no escalation)."""
    return user_admin.create_user(session, actor=principal, body=body, ip_address=ip)


@router.get("", response_model=Page[UserRead], responses=problem_responses(403, 422))
def list_users(
    session: DbSession,
    _: CanView,
    page: PageParams,
    role: Role | None = None,
    active: bool | None = None,
    search: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> Page[UserRead]:
    """Users, newest first, filtered by role, activity and a search over email and names."""
    return user_admin.list_users(
        session, role=role, active=active, search=search, limit=page.limit, offset=page.offset
    )


@router.get("/stats", response_model=UserStatsRead, responses=problem_responses(403))
def user_stats(session: DbSession, _: CanView) -> UserStatsRead:
    """How many users each role has: active, inactive, anonymised."""
    return user_admin.user_stats(session)


@router.get("/{user_id:int}", response_model=UserDetailRead, responses=problem_responses(403, 404))
def get_user(user_id: PathId, session: DbSession, _: CanView) -> UserDetailRead:
    """One user with its profile and grants."""
    return user_admin.get_user(session, user_id=user_id)


@router.patch(
    "/{user_id:int}", response_model=UserChanged, responses=problem_responses(403, 404, 409, 422)
)
def update_user(
    user_id: PathId,
    body: UserUpdate,
    session: DbSession,
    principal: CanManageSomeRole,
    ip: ClientIp,
) -> UserChanged:
    """Edit profile fields (names, company, description); email and role never change here."""
    return user_admin.update_user(
        session, actor=principal, user_id=user_id, body=body, ip_address=ip
    )


@router.post(
    "/{user_id}/activate", response_model=UserChanged, responses=problem_responses(403, 404, 409)
)
def activate_user(
    user_id: PathId, session: DbSession, principal: CanDeactivate, ip: ClientIp
) -> UserChanged:
    """Let the user sign in again."""
    return user_admin.set_active(
        session, actor=principal, user_id=user_id, active=True, ip_address=ip
    )


@router.post(
    "/{user_id}/deactivate", response_model=UserChanged, responses=problem_responses(403, 404, 409)
)
def deactivate_user(
    user_id: PathId, session: DbSession, principal: CanDeactivate, ip: ClientIp
) -> UserChanged:
    """Stop the user at once (tokens too); never oneself or the last superuser (409)."""
    return user_admin.set_active(
        session, actor=principal, user_id=user_id, active=False, ip_address=ip
    )


@router.post(
    "/{user_id}/password",
    response_model=UserChanged,
    responses=problem_responses(403, 404, 409, 422),
)
def reset_password(
    user_id: PathId,
    body: PasswordReset,
    session: DbSession,
    principal: CanManageSomeRole,
    ip: ClientIp,
) -> UserChanged:
    """Set a new password for another user (8 to 1024 characters); one's own changes with the
    current password (`POST /admin/password`), 409 here."""
    return user_admin.reset_password(
        session, actor=principal, user_id=user_id, new_password=body.new_password, ip_address=ip
    )


@router.get(
    "/{user_id}/permissions", response_model=GrantsRead, responses=problem_responses(403, 404, 422)
)
def get_permissions(user_id: PathId, session: DbSession, _: CanView) -> GrantsRead:
    """A staff user's granted permissions."""
    return user_admin.get_grants(session, user_id=user_id)


@router.put(
    "/{user_id}/permissions",
    response_model=GrantsRead,
    responses=problem_responses(403, 404, 409, 422),
)
def set_permissions(
    user_id: PathId,
    body: GrantsUpdate,
    session: DbSession,
    principal: CanManageSomeRole,
    ip: ClientIp,
) -> GrantsRead:
    """Replace a staff user's grants: validated, de-duplicated, never beyond the caller's own."""
    return user_admin.set_grants(
        session, actor=principal, user_id=user_id, permissions=body.permissions, ip_address=ip
    )
