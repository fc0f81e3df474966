"""Standard Webhooks signatures (https://www.standardwebhooks.com): signing what JivaPay sends to
merchants and verifying it (for `jivapay verify-callback` and for tests of merchants' code).

The signed content is "{webhook-id}.{webhook-timestamp}.{raw body}"; the signature is
"v1,<base64 HMAC-SHA256>". A secret written "whsec_<base64>" is keyed by the base64-DECODED bytes
after the prefix, as the specification says; the `webhook-signature` header may carry several
space-separated signatures (during a secret rotation), any one matching is enough.
Pure functions with no I/O: the same code signs in the worker and verifies in the CLI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SIGNATURE_VERSION = "v1"
# Standard Webhooks recommends rejecting timestamps more than five minutes away from now.
DEFAULT_TOLERANCE_SECONDS = 300

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class WebhookVerificationError(ValueError):
    """A signature, timestamp or secret that does not check out (the message says which)."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64-decoded part after "whsec_"."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookVerificationError("the secret is not whsec_<base64>") from exc
    if not key:
        raise WebhookVerificationError("the secret is empty")
    return key


def sign(secret: str, *, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The `webhook-signature` value ("v1,<base64>") of `body` sent as `msg_id` at `timestamp`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one request."""
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }


def verify(
    secret: str,
    *,
    msg_id: str,
    timestamp: str,
    signature: str,
    body: bytes,
    tolerance_seconds: int | None = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Raise `WebhookVerificationError` unless `signature` is valid and `timestamp` fresh.

    `tolerance_seconds=None` skips the freshness check (inspecting an old delivery by hand).
    """
    ts = timestamp.strip()
    if not ts.isascii() or not ts.isdigit():
        raise WebhookVerificationError("webhook-timestamp must be unix seconds")
    if tolerance_seconds is not None:
        current = time.time() if now is None else now
        if abs(current - int(ts)) > tolerance_seconds:
            raise WebhookVerificationError(
                f"webhook-timestamp is more than {tolerance_seconds} s away from now"
            )
    expected = sign(secret, msg_id=msg_id, timestamp=ts, body=body).encode()
    for candidate in signature.split():
        if hmac.compare_digest(expected, candidate.encode()):
            return
    raise WebhookVerificationError("no signature matches")


def is_valid(secret: str, *, msg_id: str, timestamp: str, signature: str, body: bytes) -> bool:
    """True when `verify` accepts the request (freshness checked with the default tolerance)."""
    try:
        verify(secret, msg_id=msg_id, timestamp=timestamp, signature=signature, body=body)
    except WebhookVerificationError:
        return False
    return True
