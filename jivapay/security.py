"""Authentication primitives: password hashing (argon2 via pwdlib), JWT access tokens, principals,
and the HMAC request signature of store credentials. The FastAPI dependencies built on them live in
`api_routers/auth.py`, so nothing below the routers imports FastAPI.

Users (merchant, trader, teamlead, support, admin) send `Authorization: Bearer <JWT>`; the user row is
loaded on every request, so deactivating a user or changing their role takes effect at once.
Stores send `X-API-Key`, `X-Timestamp` and `X-Signature` (hex HMAC-SHA256 with the store's private key
of "{timestamp}.{METHOD}.{path}.{raw body}"; `path` includes "?query" when the URL has one).
Every refusal is a `JivaPayException`, rendered as problem+json by the app's handlers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import ColumnElement, Table, Text, bindparam, select, type_coerce
from sqlalchemy.orm import Session, joinedload

from jivapay.config import get_settings
from jivapay.database.models import Merchant, MerchantStore, User
from jivapay.database.types import decrypt_value
from jivapay.enums import Role
from jivapay.utils.exceptions import AuthenticationFailed, Forbidden, InvalidSignature

# --------------------------------------------------------------------------- passwords

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


# --------------------------------------------------------------------------- JWT access tokens

# Roles whose profile carries `granted_permissions`.
STAFF_ROLES = frozenset({Role.ADMIN, Role.SUPPORT, Role.TEAMLEAD})


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    role: Role
    issued_at: datetime
    expires_at: datetime
    jti: str
    token_version: int = 0


def create_access_token(
    user_id: int, role: Role, expires_minutes: int | None = None, *, token_version: int = 0
) -> str:
    """A signed access token for `user_id` acting as `role`, valid while the user's
    `token_version` is still `token_version`."""
    settings = get_settings()
    minutes = settings.ACCESS_TOKEN_EXPIRE_MINUTES if expires_minutes is None else expires_minutes
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "role": Role(role).value,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
        "jti": uuid.uuid4().hex,
        "ver": token_version,
    }
    return jwt.encode(payload, settings.SECRET_KEY, algorithm=settings.ALGORITHM)


# Servers' clocks differ a little: a token one of them issued must not read as "issued in the
# future" on another (PyJWT refuses that, and an expiry, without leeway).
TOKEN_CLOCK_LEEWAY_SECONDS = 30


def decode_access_token(token: str) -> TokenClaims:
    """Verify and parse a token; any problem (signature, expiry, shape) is `AuthenticationFailed`."""
    settings = get_settings()
    try:
        payload = jwt.decode(
            token,
            settings.SECRET_KEY,
            algorithms=[settings.ALGORITHM],
            options={"require": ["sub", "role", "exp", "iat", "jti"]},
            leeway=TOKEN_CLOCK_LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationFailed("Token has expired", code="token_expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthenticationFailed("Could not validate credentials") from exc
    try:
        return TokenClaims(
            user_id=int(payload["sub"]),
            role=Role(payload["role"]),
            issued_at=datetime.fromtimestamp(int(payload["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
            jti=str(payload["jti"]),
            # Tokens issued before versions existed carry none: version 0, every user's first.
            token_version=int(payload.get("ver", 0)),
        )
    except (TypeError, ValueError) as exc:
        raise AuthenticationFailed("Could not validate credentials") from exc


# --------------------------------------------------------------------------- user principals


@dataclass(frozen=True)
class Principal:
    """The authenticated user of a request."""

    user_id: int
    role: Role
    email: str
    profile_id: int  # id of the admins/supports/teamleads/merchants/traders row
    permissions: tuple[str, ...] = ()


def _profile(user: User, role: Role) -> Any:
    return getattr(user, role.value)


def revoke_tokens(user: User) -> None:
    """Every access token issued to `user` so far stops working (at the next request)."""
    user.token_version = (user.token_version or 0) + 1


def load_principal(
    session: Session, *, user_id: int, role: Role, token_version: int = 0
) -> Principal:
    """The principal of an active user holding `role` whose tokens of `token_version` are still
    valid, or `AuthenticationFailed`."""
    stmt = select(User).where(User.id == user_id).options(joinedload(getattr(User, role.value)))
    user = session.scalars(stmt).unique().one_or_none()
    if user is None or user.role != role.value:
        raise AuthenticationFailed("Could not validate credentials")
    if not user.is_active:
        raise AuthenticationFailed("User account is disabled", code="account_disabled")
    if user.token_version != token_version:
        raise AuthenticationFailed(
            "The token was revoked (password changed or reset); log in again",
            code="token_revoked",
        )
    profile = _profile(user, role)
    if profile is None:
        raise AuthenticationFailed("Could not validate credentials")
    permissions: tuple[str, ...] = ()
    if role in STAFF_ROLES:
        permissions = tuple(str(p) for p in (profile.granted_permissions or []))
    return Principal(
        user_id=user.id,
        role=role,
        email=user.email,
        profile_id=profile.id,
        permissions=permissions,
    )


# --------------------------------------------------------------------------- store API keys

SIGNATURE_TOLERANCE_SECONDS = 300
_BAD_STORE_CREDENTIALS = "Invalid API key or signature"
# Signed with when the key is unknown, so an unknown key costs as much as a bad signature.
_DUMMY_PRIVATE_KEY = secrets.token_urlsafe(32)


@dataclass(frozen=True)
class StorePrincipal:
    """The store authenticated by API key and request signature."""

    store_id: int
    merchant_id: int
    public_api_key: str
    # What the authentication read along with the store's keys (`verify_store_request`'s
    # `columns`), by label: the request's service then needs no second read of the store.
    loaded: Mapping[str, Any] = field(default_factory=dict, compare=False)


def generate_api_key_pair() -> tuple[str, str]:
    """A new (public, private) API key pair for a store."""
    return "pk_" + secrets.token_urlsafe(32), "sk_" + secrets.token_urlsafe(32)


def generate_callback_secret() -> str:
    """A Standard Webhooks signing secret: "whsec_" + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def compute_signature(private_key: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of "{timestamp}.{METHOD}.{path}.{raw body}" keyed by the private key."""
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return hmac.new(private_key.encode(), message, hashlib.sha256).hexdigest()


def _timestamp_fresh(timestamp: str, now: float) -> bool:
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    return abs(now - int(timestamp)) <= SIGNATURE_TOLERANCE_SECONDS


_STORES = cast(Table, MerchantStore.__table__)
# Plain columns, not the ORM entity: the store's other columns (its callback secret among them,
# decrypted on every load) are not read on every signed request.
_KEY_COLUMNS = (
    _STORES.c.id,
    _STORES.c.merchant_id,
    _STORES.c.public_api_key,
    # The stored token as it is: `_private_key` decrypts it once per process.
    type_coerce(_STORES.c.private_api_key, Text).label("private_api_key_token"),
    _STORES.c.access,
    # A deactivated merchant's stores stop with its logins (two primary-key lookups).
    select(User.is_active)
    .join(Merchant, Merchant.user_id == User.id)
    .where(Merchant.id == _STORES.c.merchant_id)
    .scalar_subquery()
    .label("merchant_active"),
)
_STORE_BY_KEY: dict[tuple[ColumnElement[Any], ...], tuple[Any, tuple[str, ...]]] = {}


def _store_by_key(columns: tuple[ColumnElement[Any], ...]) -> tuple[Any, tuple[str, ...]]:
    """The statement reading a store's keys and `columns` by public key (built once per set of
    columns), and the columns' labels."""
    built = _STORE_BY_KEY.get(columns)
    if built is None:
        labels = tuple(str(column.key) for column in columns)
        statement = select(*_KEY_COLUMNS, *columns).where(
            _STORES.c.public_api_key == bindparam("api_key")
        )
        built = _STORE_BY_KEY[columns] = (statement, labels)
    return built


# The stored private-key token each store's last verified request was signed with, by public key
# (bounded; emptied when full): a request signed with it is verified before its store is read, so
# that statement may already do what only a verified request may (`signature_verified`).
_VERIFIED_TOKENS: dict[str, str] = {}
_VERIFIED_TOKENS_MAX = 4096
SIGNATURE_VERIFIED_BIND = "verified_private_api_key"


def signature_verified() -> ColumnElement[bool]:
    """True, in the statement `verify_store_request` reads the store with, when the request's
    signature was verified before the statement with the key the store holds now; NULL otherwise
    (no store's request verified by this process yet, a rotated key, a wrong signature). Guard with
    it a column that must not run for an unverified request: `case((signature_verified(), ...))`."""
    return type_coerce(_STORES.c.private_api_key, Text) == bindparam(
        SIGNATURE_VERIFIED_BIND, type_=Text
    )


@lru_cache(maxsize=4096)
def _private_key(token: str, encryption_keys: str) -> str:
    """A store's private key from its stored token, decrypted once per process (and per
    `DATA_ENCRYPTION_KEY`), not on every signed request. Keeping it costs no secrecy: whoever can
    read this process's memory can read the encryption key too; new keys are new tokens."""
    return decrypt_value(token)


def verify_store_request(
    session: Session,
    *,
    api_key: str | None,
    timestamp: str | None,
    signature: str | None,
    method: str,
    path: str,
    body: bytes,
    now: float | None = None,
    columns: Sequence[ColumnElement[Any]] = (),
    parameters: Mapping[str, Any] | None = None,
) -> StorePrincipal:
    """Check a store's signed request; `InvalidSignature` (401) or `Forbidden` (403) on refusal.

    `columns` (labelled, of `merchant_stores` or correlated to it; their bound `parameters`) are
    read in the same statement and handed over as the principal's `loaded`. A column guarded by
    `signature_verified()` is only evaluated for a request whose signature was verified before the
    statement, with the key this process last verified the store's requests with (the statement
    checks that key is still the store's); it reads NULL otherwise, and the caller does the work
    itself once the signature has verified (`loaded` holds None)."""
    if not api_key or not timestamp or not signature:
        raise InvalidSignature("Missing X-API-Key, X-Timestamp or X-Signature header")
    if not _timestamp_fresh(timestamp, time.time() if now is None else now):
        raise InvalidSignature(
            f"X-Timestamp must be unix seconds within {SIGNATURE_TOLERANCE_SECONDS} s of now"
        )
    encryption_keys = get_settings().DATA_ENCRYPTION_KEY
    given = signature.strip().lower().encode()
    # Checked against the key known from the store's last verified request (a dummy when there is
    # none, so that every refusal costs two signatures, whichever key it names).
    known = _VERIFIED_TOKENS.get(api_key)
    known_key = _private_key(known, encryption_keys) if known is not None else _DUMMY_PRIVATE_KEY
    known_valid = hmac.compare_digest(
        compute_signature(known_key, timestamp, method, path, body).encode(), given
    )
    verified_token = known if known is not None and known_valid else None
    statement, labels = _store_by_key(tuple(columns))
    store = session.execute(
        statement,
        {**(parameters or {}), "api_key": api_key, SIGNATURE_VERIFIED_BIND: verified_token},
    ).first()
    if store is not None and verified_token == store.private_api_key_token:
        valid = True
    else:
        private_key = (
            _private_key(store.private_api_key_token, encryption_keys)
            if store is not None
            else _DUMMY_PRIVATE_KEY
        )
        expected = compute_signature(private_key, timestamp, method, path, body)
        valid = hmac.compare_digest(expected.encode(), given)
    if store is None or not valid:
        raise InvalidSignature(_BAD_STORE_CREDENTIALS)
    if known != store.private_api_key_token:
        if len(_VERIFIED_TOKENS) >= _VERIFIED_TOKENS_MAX:
            _VERIFIED_TOKENS.clear()
        _VERIFIED_TOKENS[api_key] = store.private_api_key_token
    if not store.access:
        raise Forbidden("Store access is disabled", code="store_access_denied")
    if not store.merchant_active:
        raise Forbidden("The store's merchant account is deactivated", code="store_access_denied")
    row = store._mapping
    return StorePrincipal(
        store_id=store.id,
        merchant_id=store.merchant_id,
        public_api_key=store.public_api_key,
        loaded={label: row[label] for label in labels},
    )
