"""JWT tokens, password hashing, signatures and key generation (no database needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from jivapay.config import get_settings
from jivapay.enums import Role
from jivapay.security import (
    compute_signature,
    create_access_token,
    decode_access_token,
    generate_api_key_pair,
    generate_callback_secret,
    hash_password,
    verify_password,
)
from jivapay.utils.exceptions import AuthenticationFailed


def test_token_round_trip_carries_user_role_and_unique_jti() -> None:
    token = create_access_token(42, Role.TRADER)
    claims = decode_access_token(token)
    assert claims.user_id == 42
    assert claims.role is Role.TRADER
    assert len(claims.jti) == 32
    assert claims.jti != decode_access_token(create_access_token(42, Role.TRADER)).jti
    minutes = get_settings().ACCESS_TOKEN_EXPIRE_MINUTES
    assert claims.expires_at - claims.issued_at == timedelta(minutes=minutes)


def test_token_claims_are_the_documented_ones() -> None:
    settings = get_settings()
    token = create_access_token(7, Role.ADMIN, expires_minutes=5)
    payload = jwt.decode(token, settings.SECRET_KEY, algorithms=[settings.ALGORITHM])
    assert set(payload) == {"sub", "role", "exp", "iat", "jti", "ver"}
    assert payload["ver"] == 0  # the user's token version (`revoke_tokens` raises it)
    assert payload["sub"] == "7"
    assert payload["role"] == "admin"
    assert payload["exp"] - payload["iat"] == 300


def test_expired_token_is_refused_with_its_own_code() -> None:
    token = create_access_token(1, Role.MERCHANT, expires_minutes=-1)
    with pytest.raises(AuthenticationFailed) as info:
        decode_access_token(token)
    assert info.value.code == "token_expired"
    assert info.value.status_code == 401


def _forge(payload: dict[str, object], key: str | None = None, alg: str | None = None) -> str:
    settings = get_settings()
    return jwt.encode(payload, key or settings.SECRET_KEY, algorithm=alg or settings.ALGORITHM)


@pytest.mark.parametrize(("ahead", "accepted"), [(5, True), (25, True), (120, False)])
def test_a_token_from_a_server_whose_clock_runs_ahead(ahead: int, accepted: bool) -> None:
    # Issued by another server a few seconds ahead: accepted within the leeway, not beyond it.
    issued = int(time.time()) + ahead
    claims = {"sub": "7", "role": "merchant", "iat": issued, "exp": issued + 600, "jti": "j"}
    token = _forge(claims)
    if accepted:
        assert decode_access_token(token).user_id == 7
    else:
        with pytest.raises(AuthenticationFailed):
            decode_access_token(token)


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "",
        "a.b.c",
        # Signed with another key.
        _forge(
            {"sub": "1", "role": "admin", "exp": 9999999999, "iat": 1, "jti": "x"},
            key="another-key-that-is-long-enough-0123456789",
        ),
        # Missing jti.
        _forge({"sub": "1", "role": "admin", "exp": 9999999999, "iat": 1}),
        # Unknown role.
        _forge({"sub": "1", "role": "root", "exp": 9999999999, "iat": 1, "jti": "x"}),
        # Non-numeric subject.
        _forge({"sub": "abc", "role": "admin", "exp": 9999999999, "iat": 1, "jti": "x"}),
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        decode_access_token(token)
    assert info.value.code == "authentication_failed"


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode(
        {"sub": "1", "role": "admin", "exp": 9999999999, "iat": 1, "jti": "x"},
        key=None,  # type: ignore[arg-type]
        algorithm="none",
    )
    with pytest.raises(AuthenticationFailed):
        decode_access_token(token)


def test_password_hash_verifies_only_the_right_password() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2")
    assert verify_password("correct horse", hashed)
    assert not verify_password("wrong horse", hashed)
    assert not verify_password("correct horse", None)
    assert not verify_password("correct horse", "not-a-hash")


def test_signature_is_hex_hmac_of_the_documented_message() -> None:
    body = b'{"amount":"100.00"}'
    sig = compute_signature("sk_test", "1700000000", "post", "/gateway/payin/init", body)
    expected = hmac.new(
        b"sk_test", b'1700000000.POST./gateway/payin/init.{"amount":"100.00"}', hashlib.sha256
    ).hexdigest()
    assert sig == expected
    assert compute_signature("sk_test", "1700000000", "POST", "/gateway/payin/init", b"{}") != sig


def test_generated_keys_have_prefixes_and_are_unique() -> None:
    public, private = generate_api_key_pair()
    assert public.startswith("pk_") and private.startswith("sk_")
    assert len(public) <= 64  # fits merchant_stores.public_api_key
    assert generate_api_key_pair() != (public, private)
    secret = generate_callback_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
