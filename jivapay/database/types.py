"""Column types: Fernet-encrypted text for secrets at rest, and a helper for clear last-4 digits.

The keys come from `DATA_ENCRYPTION_KEY`: one Fernet key, or several comma-separated, newest first
(`MultiFernet`: the first encrypts, any decrypts), so a key can be rotated without downtime
(`rotate_token`, run over every stored value by `jivapay rotate-encryption-key`). Values are
encrypted on the way in and decrypted on the way out; the database only ever sees ciphertext.
Searching and display use the clear `*_last4` column beside each encrypted one, equality search a
keyed hash (`fingerprint`) whose key does not change when the encryption key rotates.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from jivapay.config import get_settings, split_keys
from jivapay.utils.exceptions import ConfigurationError


@lru_cache(maxsize=4)
def _fernets(keys: str) -> tuple[Fernet, ...]:
    try:
        return tuple(Fernet(k.encode()) for k in split_keys(keys))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError("DATA_ENCRYPTION_KEY is not a valid Fernet key") from exc


@lru_cache(maxsize=4)
def _fernet(keys: str) -> MultiFernet:
    try:
        return MultiFernet(list(_fernets(keys)))
    except ValueError as exc:  # an empty list
        raise ConfigurationError("DATA_ENCRYPTION_KEY is empty") from exc


def rotate_token(token: str) -> str | None:
    """`token` re-encrypted with the newest key, or None when the newest key already reads it.

    None makes a second rotation pass write nothing. A token no configured key reads raises
    `ConfigurationError` (its key was dropped too early, or the value is not ours).
    """
    keys = get_settings().DATA_ENCRYPTION_KEY
    try:
        _fernets(keys)[0].decrypt(token.encode())
        return None
    except (InvalidToken, IndexError):
        pass
    try:
        return _fernet(keys).rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise ConfigurationError(
            "stored secret cannot be decrypted with any DATA_ENCRYPTION_KEY"
        ) from exc


def encrypt_value(plain: str) -> str:
    return _fernet(get_settings().DATA_ENCRYPTION_KEY).encrypt(plain.encode()).decode()


def decrypt_value(token: str) -> str:
    try:
        return _fernet(get_settings().DATA_ENCRYPTION_KEY).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ConfigurationError(
            "stored secret cannot be decrypted with DATA_ENCRYPTION_KEY"
        ) from exc


def last4(value: str) -> str:
    """The last four digits (or characters) of a card or account number, for display and search."""
    digits = "".join(ch for ch in value if ch.isdigit()) or value
    return digits[-4:]


def mask_number(value_last4: str | None) -> str | None:
    """How a card number is shown everywhere except the payer page: `**** 1234`."""
    return None if value_last4 is None else f"**** {value_last4}"


def fingerprint(value: str) -> str:
    """A keyed hash of a number, for equality search (fraud lists) without decrypting."""
    key = get_settings().fingerprint_key.encode()
    digits = "".join(ch for ch in value if ch.isdigit()) or value
    return hmac.new(key, digits.encode(), hashlib.sha256).hexdigest()


class EncryptedString(TypeDecorator[str]):
    """Text encrypted with Fernet at rest."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return encrypt_value(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return decrypt_value(str(value))
