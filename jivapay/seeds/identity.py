"""Seeded identity: the five roles, the super admin, and the user-creation call the seeds share.

The super admin's email and password come from `JIVAPAY_ADMIN_EMAIL` / `JIVAPAY_ADMIN_PASSWORD`;
without a password one is generated and reported once. An existing admin is never touched, so a
rerun cannot reset a password someone changed.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.config import get_settings
from jivapay.database.models import Admin, Merchant, RoleModel, Support, TeamLead, Trader, User
from jivapay.enums import Role
from jivapay.security import hash_password

ROLE_DESCRIPTIONS: dict[Role, str] = {
    Role.ADMIN: "Platform administrator: everything within the granted permissions.",
    Role.SUPPORT: "Support: orders, disputes and requisite moderation within granted permissions.",
    Role.TEAMLEAD: "Team lead: manages a team of traders and switches their traffic.",
    Role.MERCHANT: "Merchant: owns stores that send PayIn and PayOut orders.",
    Role.TRADER: "Trader: owns requisites and a crypto deposit, confirms orders.",
}

SUPER_ADMIN_PERMISSIONS = ["superuser"]

_PROFILES: dict[Role, type[Any]] = {
    Role.ADMIN: Admin,
    Role.SUPPORT: Support,
    Role.TEAMLEAD: TeamLead,
    Role.MERCHANT: Merchant,
    Role.TRADER: Trader,
}
_PERMISSION_ROLES = {Role.ADMIN, Role.SUPPORT, Role.TEAMLEAD}


def seed_roles(session: Session) -> int:
    """Insert the missing roles; returns how many were added."""
    existing = set(session.scalars(select(RoleModel.name)))
    added = 0
    for role, description in ROLE_DESCRIPTIONS.items():
        if role.value not in existing:
            session.add(RoleModel(name=role.value, description=description))
            added += 1
    session.flush()
    return added


def find_user(session: Session, email: str) -> User | None:
    """The user with this email, compared case-insensitively."""
    stmt = select(User).where(func.lower(User.email) == email.strip().lower())
    return session.scalars(stmt).one_or_none()


def generate_password() -> str:
    """A random password for a seeded account."""
    return secrets.token_urlsafe(16)


def ensure_super_admin(session: Session) -> tuple[User, str | None]:
    """The super admin, created when missing; the password is returned only when generated now."""
    settings = get_settings()
    email = settings.JIVAPAY_ADMIN_EMAIL.strip().lower()
    existing = find_user(session, email)
    if existing is not None:
        return existing, None
    password = settings.JIVAPAY_ADMIN_PASSWORD
    generated = None
    if not password:
        password = generated = generate_password()
    user = create_user(
        session,
        email=email,
        password=password,
        role=Role.ADMIN,
        first_name="Super",
        last_name="Admin",
        permissions=list(SUPER_ADMIN_PERMISSIONS),
    )
    return user, generated


def create_user(
    session: Session,
    *,
    email: str,
    password: str,
    role: Role,
    first_name: str | None = None,
    last_name: str | None = None,
    permissions: list[str] | None = None,
    template: str | None = None,
    **profile_fields: Any,
) -> User:
    """Create a user and its role profile through the auth service (or the local fallback)."""
    try:
        from jivapay.services.auth_service import create_user as service_create_user
    except ImportError:
        return _create_user_fallback(
            session,
            email=email,
            password=password,
            role=role,
            first_name=first_name,
            last_name=last_name,
            permissions=permissions,
            **profile_fields,
        )
    user: User = service_create_user(
        session,
        email=email,
        password=password,
        role=role,
        first_name=first_name,
        last_name=last_name,
        permissions=permissions,
        template=template,
        **profile_fields,
    )
    return user


def _create_user_fallback(
    session: Session,
    *,
    email: str,
    password: str,
    role: Role,
    first_name: str | None,
    last_name: str | None,
    permissions: list[str] | None,
    **profile_fields: Any,
) -> User:
    user = User(email=email.strip().lower(), password_hash=hash_password(password), role=role.value)
    session.add(user)
    session.flush()
    fields: dict[str, Any] = {"first_name": first_name, "last_name": last_name, **profile_fields}
    if role in _PERMISSION_ROLES:
        fields["granted_permissions"] = list(permissions or [])
    session.add(_PROFILES[role](user_id=user.id, **fields))
    session.flush()
    return user
