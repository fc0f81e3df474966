"""Helpers of the merchant and staff store tests: accounts with tokens, clients of the real
servers, and row counts for "bad input writes nothing"."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import Admin, AuditLog, Merchant, Support
from jivapay.enums import Role
from jivapay.security import create_access_token
from tests.factories import make_user


def make_merchant(session: Session) -> Merchant:
    user = make_user(session, Role.MERCHANT)
    merchant = Merchant(user_id=user.id, company_name="Test shop")
    session.add(merchant)
    session.flush()
    return merchant


def make_staff(session: Session, role: Role, permissions: list[str]) -> Any:
    user = make_user(session, role)
    model = Admin if role == Role.ADMIN else Support
    profile = model(user_id=user.id, granted_permissions=permissions)
    session.add(profile)
    session.flush()
    return profile


def bearer(user_id: int, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_access_token(user_id, role)}"}


def count(session: Session, model: Any) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model)) or 0


def audit_count(session: Session) -> int:
    return count(session, AuditLog)
