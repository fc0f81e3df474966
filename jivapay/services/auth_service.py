"""Logins and user creation.

`authenticate` checks email, password, role and activity and answers every refusal identically (same
error, same argon2 work), so a caller cannot tell an unknown email from a wrong password. `login` is
the edge-level orchestrator the login routes call: it owns two transactions, like the order
processor, so the audit row of a FAILED login is committed even though the login transaction rolls
back. `create_user` creates a user with its role profile (used by seeds, the CLI and admin APIs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from jivapay.config import get_settings
from jivapay.database.base import utcnow
from jivapay.database.models import Admin, Merchant, RoleModel, Support, TeamLead, Trader, User
from jivapay.database.utils import (
    atomic_transaction,
    integrity_errors_as_domain_errors,
    transaction_flow,
)
from jivapay.enums import AuditLevel, Role
from jivapay.permissions import template_permissions, validate_grants
from jivapay.security import STAFF_ROLES, create_access_token, hash_password, verify_password
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import (
    AuthenticationFailed,
    DuplicateObject,
    JivaPayException,
    ValidationFailed,
)

LOGIN_FAILED_MESSAGE = "Incorrect email or password"
# Longer inputs are refused without hashing them, so a huge password cannot burn CPU.
MAX_PASSWORD_LENGTH = 1024

_PROFILE_MODELS: dict[Role, type[Any]] = {
    Role.ADMIN: Admin,
    Role.SUPPORT: Support,
    Role.TEAMLEAD: TeamLead,
    Role.MERCHANT: Merchant,
    Role.TRADER: Trader,
}


@dataclass(frozen=True)
class AuthResult:
    access_token: str
    token_type: str
    expires_in: int  # seconds
    user_id: int
    role: Role


class LoginFailed(AuthenticationFailed):
    """A refused login; `reason` is for the audit log only, never for the client."""

    def __init__(self, reason: str, *, user_id: int | None = None) -> None:
        super().__init__(LOGIN_FAILED_MESSAGE, code="authentication_failed")
        self.reason = reason
        self.user_id = user_id


def normalize_email(email: str) -> str:
    return email.strip().lower()


def authenticate(
    session: Session, *, email: str, password: str, role: Role, ip_address: str | None
) -> AuthResult:
    """Check credentials for `role`, record the success and issue a token; `LoginFailed` if refused.

    A refusal writes nothing in `session`: the caller records it after rolling back (see `login`).
    """
    address = normalize_email(email)
    if len(password) > MAX_PASSWORD_LENGTH:
        verify_password("x", None)
        raise LoginFailed("password_too_long")
    user = session.scalars(select(User).where(func.lower(User.email) == address)).one_or_none()
    password_ok = verify_password(password, user.password_hash if user is not None else None)
    if user is None:
        raise LoginFailed("unknown_email")
    if not password_ok:
        raise LoginFailed("wrong_password", user_id=user.id)
    if user.role != Role(role).value:
        raise LoginFailed("wrong_role", user_id=user.id)
    if not user.is_active:
        raise LoginFailed("inactive_user", user_id=user.id)
    user.last_login_at = utcnow()
    log_event(
        session,
        action="auth.login_succeeded",
        user_id=user.id,
        target_entity="user",
        target_id=user.id,
        details={"role": user.role},
        ip_address=ip_address,
    )
    minutes = get_settings().ACCESS_TOKEN_EXPIRE_MINUTES
    return AuthResult(
        access_token=create_access_token(
            user.id, Role(user.role), minutes, token_version=user.token_version
        ),
        token_type="bearer",  # noqa: S106 - the OAuth2 token type, not a secret
        expires_in=minutes * 60,
        user_id=user.id,
        role=Role(user.role),
    )


def record_login_failure(
    session: Session,
    *,
    email: str,
    role: Role,
    reason: str,
    user_id: int | None,
    ip_address: str | None,
) -> None:
    """Audit a refused login (the reason goes to the log, never to the client)."""
    log_event(
        session,
        action="auth.login_failed",
        user_id=user_id,
        target_entity="user",
        target_id=user_id,
        details={"email": normalize_email(email)[:320], "role": Role(role).value, "reason": reason},
        ip_address=ip_address,
        level=AuditLevel.WARNING,
    )


@transaction_flow
def login(*, email: str, password: str, role: Role, ip_address: str | None) -> AuthResult:
    """Authenticate in one transaction; on refusal, audit it in a second one and re-raise."""
    try:
        with atomic_transaction() as session:
            return authenticate(
                session, email=email, password=password, role=role, ip_address=ip_address
            )
    except LoginFailed as exc:
        with atomic_transaction() as session:
            record_login_failure(
                session,
                email=email,
                role=role,
                reason=exc.reason,
                user_id=exc.user_id,
                ip_address=ip_address,
            )
        raise


def ensure_role_row(session: Session, role: Role) -> None:
    """Insert the `roles` row `users.role` refers to, if the seeds have not yet."""
    session.execute(
        pg_insert(RoleModel)
        .values(name=Role(role).value)
        .on_conflict_do_nothing(index_elements=["name"])
    )


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
    actor_user_id: int | None = None,
    ip_address: str | None = None,
    **profile_fields: Any,
) -> User:
    """Create a user and its role profile, audited as `user.created`; `DuplicateObject` when the
    email is taken."""
    role = Role(role)
    address = normalize_email(email)
    if "@" not in address or len(address) > 320:
        raise ValidationFailed("a valid email address is required")
    if not password or len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(f"password must be 1 to {MAX_PASSWORD_LENGTH} characters")
    if role not in STAFF_ROLES and (permissions or template):
        raise ValidationFailed(f"{role.value} accounts have no granted permissions")
    grants: list[str] = []
    if template is not None:
        grants.extend(template_permissions(template))
    if permissions:
        grants.extend(permissions)
    grants = validate_grants(grants)
    if session.scalars(select(User.id).where(func.lower(User.email) == address)).first():
        raise DuplicateObject("A user with this email already exists")

    ensure_role_row(session, role)
    duplicate: dict[str, JivaPayException] = {
        "uq_users_email": DuplicateObject("A user with this email already exists")
    }
    with integrity_errors_as_domain_errors(session, duplicate):
        user = User(email=address, password_hash=hash_password(password), role=role.value)
        session.add(user)
        session.flush()
        fields: dict[str, Any] = {"first_name": first_name, "last_name": last_name}
        fields.update(profile_fields)
        if role in STAFF_ROLES:
            fields["granted_permissions"] = grants
        session.add(_PROFILE_MODELS[role](user_id=user.id, **fields))
        session.flush()
    # No email or names in the details: the audit row must not outlive a GDPR erasure.
    log_event(
        session,
        action="user.created",
        user_id=actor_user_id,
        target_entity="user",
        target_id=user.id,
        details={"role": role.value, "template": template, "permissions": grants},
        ip_address=ip_address,
    )
    return user
