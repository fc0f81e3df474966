"""Operator-side account recovery: setting a user's password from the command line (audited).

Used by `jivapay set-password` when the admin password shown once is lost; the API's own password
routes are for users who can still log in.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import User
from jivapay.security import hash_password, revoke_tokens
from jivapay.services.audit_logger import log_event
from jivapay.services.auth_service import MAX_PASSWORD_LENGTH, normalize_email
from jivapay.utils.exceptions import NotFound, ValidationFailed


def reset_password(session: Session, *, email: str, new_password: str) -> User:
    """Replace the password of the user with `email`; audited as `user.password_reset_cli`."""
    if not new_password or len(new_password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(f"password must be 1 to {MAX_PASSWORD_LENGTH} characters")
    address = normalize_email(email)
    user = session.scalars(
        select(User).where(func.lower(User.email) == address).with_for_update()
    ).first()
    if user is None:
        raise NotFound(f"no user with email {address}")
    user.password_hash = hash_password(new_password)
    revoke_tokens(user)
    log_event(
        session,
        action="user.password_reset_cli",
        target_entity="user",
        target_id=user.id,
        details={"email": user.email, "via": "cli"},
    )
    session.flush()
    return user
