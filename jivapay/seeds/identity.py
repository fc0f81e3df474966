"""Seeded identity: the five roles and the super admin (users are created by `auth_service`).

The super admin's email and password come from `JIVAPAY_ADMIN_EMAIL` / `JIVAPAY_ADMIN_PASSWORD`;
without a password one is generated and reported once. An existing admin is never touched, so a
rerun cannot reset a password someone changed.
"""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.config import get_settings
from jivapay.database.models import RoleModel, User
from jivapay.enums import Role
from jivapay.permissions import SUPERUSER
from jivapay.services.auth_service import create_user

ROLE_DESCRIPTIONS: dict[Role, str] = {
    Role.ADMIN: "Platform administrator: everything within the granted permissions.",
    Role.SUPPORT: "Support: orders, disputes and requisite moderation within granted permissions.",
    Role.TEAMLEAD: "Team lead: manages a team of traders and switches their traffic.",
    Role.MERCHANT: "Merchant: owns stores that send PayIn and PayOut orders.",
    Role.TRADER: "Trader: owns requisites and a crypto deposit, confirms orders.",
}

SUPER_ADMIN_PERMISSIONS = [SUPERUSER]


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


def ensure_super_admin(session: Session) -> tuple[User, str | None, bool]:
    """The super admin, its password when generated now (else None), and whether it was created."""
    settings = get_settings()
    email = settings.JIVAPAY_ADMIN_EMAIL.strip().lower()
    existing = find_user(session, email)
    if existing is not None:
        return existing, None, False
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
    return user, generated, True
