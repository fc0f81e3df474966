"""Authentication: password hashing (argon2 via pwdlib), JWT access tokens, current-principal
dependencies, role guards, and the HMAC request signature of store credentials (domain.md §6)."""

from __future__ import annotations

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

_password_hash = PasswordHash((Argon2Hasher(),))
# Verified against when the email is unknown, so a miss costs as much time as a wrong password.
_DUMMY_HASH = _password_hash.hash("jivapay-timing-equaliser")


def hash_password(plain: str) -> str:
    return _password_hash.hash(plain)


def verify_password(plain: str, hashed: str | None) -> bool:
    """Constant-time check; with no hash, burns the same time and returns False."""
    if hashed is None:
        _password_hash.verify(plain, _DUMMY_HASH)
        return False
    try:
        return _password_hash.verify(plain, hashed)
    except Exception:
        return False
