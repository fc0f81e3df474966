"""Helpers of the staff API tests: staff users with template grants, tokens, the staff apps."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import Admin, Base, Support
from jivapay.enums import Role
from jivapay.permissions import ROLE_TEMPLATES
from jivapay.security import create_access_token
from tests.factories import make_user

STAFF_TEMPLATES = (
    "super_admin",
    "admin_full",
    "admin_limited",
    "support_orders",
    "support_trader_settings",
    "support_readonly",
)


def template_role(template: str) -> Role:
    return Role.ADMIN if template.startswith(("super", "admin")) else Role.SUPPORT


def make_staff(session: Session, role: Role, permissions: Iterable[str]) -> dict[str, str]:
    """A staff user of `role` with exactly `permissions`; answers its Authorization header."""
    user = make_user(session, role)
    profile = Admin if role == Role.ADMIN else Support
    session.add(profile(user_id=user.id, granted_permissions=list(permissions)))
    session.flush()
    return {"Authorization": f"Bearer {create_access_token(user.id, role)}"}


def make_template_staff(session: Session, template: str) -> dict[str, str]:
    return make_staff(session, template_role(template), ROLE_TEMPLATES[template])


def row_counts(session: Session) -> dict[str, int]:
    """Rows in every table: a write that must change nothing leaves these equal."""
    return {
        t.name: session.scalar(select(func.count()).select_from(t)) or 0
        for t in Base.metadata.sorted_tables
    }
