"""Helpers of the admin API tests: staff users with given grants, their bearer headers, the admin
app, and row counts to prove a refused request wrote nothing."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import Admin, Base, Support, TeamLead, User
from jivapay.enums import Role
from jivapay.security import create_access_token
from tests.factories import make_user

_STAFF_PROFILES = {Role.ADMIN: Admin, Role.SUPPORT: Support, Role.TEAMLEAD: TeamLead}


def make_staff(session: Session, role: Role, permissions: Iterable[str]) -> User:
    """A staff user (admin, support or teamlead) holding exactly `permissions`."""
    user = make_user(session, role)
    session.add(_STAFF_PROFILES[role](user_id=user.id, granted_permissions=list(permissions)))
    session.flush()
    return user


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_access_token(user.id, Role(user.role))}"}


def admin_client() -> TestClient:
    from jivapay.servers.admin.server import ROUTERS
    from jivapay.servers.app_factory import build_app

    return TestClient(build_app(Role.ADMIN, routers=ROUTERS))


def row_counts(session: Session) -> dict[str, int]:
    """Rows per table (to prove that a refused request wrote nothing)."""
    session.expire_all()
    return {
        t.name: session.scalar(select(func.count()).select_from(t)) or 0
        for t in Base.metadata.sorted_tables
    }


def free_port() -> int:
    """A free local port in 26000-26099 (the range this project's tests may use)."""
    for port in range(26000, 26100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 26000-26099")
