"""The audited editing of a staff user's granted permissions (the list, templates and matcher are
`jivapay/permissions.py`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from jivapay.database.models import User
from jivapay.enums import Role
from jivapay.permissions import ensure_permission, match_permission, validate_grants
from jivapay.security import STAFF_ROLES, Principal
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import NotFound, PermissionDenied, ValidationFailed


def _grant_covered(actor: Principal, grant: str) -> bool:
    # A grant is delegable only if one of the actor's own grants covers it, wildcards included.
    return any(match_permission(own, grant) for own in actor.permissions)


def _ensure_covered(actor: Principal, grants: Iterable[str], refusal: str) -> None:
    beyond = [p for p in grants if not _grant_covered(actor, p)]
    if beyond:
        raise PermissionDenied(f"{refusal}: " + ", ".join(beyond), extra={"permissions": beyond})


def ensure_grantable(actor: Principal, grants: Iterable[str]) -> None:
    """`PermissionDenied` naming every grant the actor does not hold itself (no escalation)."""
    _ensure_covered(actor, grants, "Cannot grant permissions you do not hold")


def ensure_outranks(actor: Principal, target_grants: Iterable[str]) -> None:
    """`PermissionDenied` when the target user holds a grant the actor does not: resetting their
    password, deactivating them or editing them would reach powers the actor cannot grant (a reset
    is a takeover)."""
    _ensure_covered(
        actor, target_grants, "Cannot act on a user who holds permissions you do not hold"
    )


def update_user_permissions(
    session: Session,
    *,
    actor: Principal,
    target_user_id: int,
    permissions: Iterable[str],
    ip_address: str | None = None,
) -> list[str]:
    """Replace a staff user's grants after checking the actor may manage that role; audited."""
    user = (
        session.scalars(
            select(User)
            .where(User.id == target_user_id)
            .options(joinedload(User.admin), joinedload(User.support), joinedload(User.teamlead))
        )
        .unique()
        .one_or_none()
    )
    if user is None:
        raise NotFound("User not found")
    role = Role(user.role)
    if role not in STAFF_ROLES:
        raise ValidationFailed(f"{role.value} accounts have no granted permissions")
    ensure_permission(actor, f"users:manage:{role.value}")
    new = validate_grants(permissions)
    ensure_grantable(actor, new)
    profile = getattr(user, role.value)
    if profile is None:
        raise NotFound("User profile not found")
    old = [str(p) for p in (profile.granted_permissions or [])]
    profile.granted_permissions = new
    session.flush()
    log_event(
        session,
        action="permissions.updated",
        user_id=actor.user_id,
        target_entity="user",
        target_id=user.id,
        details={
            "role": role.value,
            "old": old,
            "new": new,
            "added": [p for p in new if p not in old],
            "removed": [p for p in old if p not in new],
        },
        ip_address=ip_address,
    )
    return new
