"""Standard Webhooks signing and verification: the specification's own vector, every refusal, and the
freshness window at its exact edges."""

from __future__ import annotations

import re

import pytest

from jivapay.services.webhook_signing import (
    DEFAULT_TOLERANCE_SECONDS,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WebhookVerificationError,
    is_valid,
    secret_key,
    sign,
    signed_headers,
    verify,
)

# The example of the Standard Webhooks specification's reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _verify(**overrides: object) -> None:
    args: dict[str, object] = {
        "msg_id": SPEC_ID,
        "timestamp": str(SPEC_TS),
        "signature": SPEC_SIGNATURE,
        "body": SPEC_BODY,
        "now": float(SPEC_TS),
    }
    args.update(overrides)
    secret = str(args.pop("secret", SPEC_SECRET))
    verify(secret, **args)  # type: ignore[arg-type]


def test_sign_matches_the_specification_vector() -> None:
    assert sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_TS, body=SPEC_BODY) == SPEC_SIGNATURE
    # The timestamp may be given as text: the signed content is the same.
    assert sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=str(SPEC_TS), body=SPEC_BODY) == (
        SPEC_SIGNATURE
    )


def test_secret_key_is_the_decoded_part_after_the_prefix() -> None:
    assert secret_key("whsec_AAEC") == b"\x00\x01\x02"
    assert secret_key("  whsec_AAEC \n") == b"\x00\x01\x02"
    # Without the prefix the whole text is the base64 key.
    assert secret_key("AAEC") == b"\x00\x01\x02"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("whsec_", "the secret is empty"),
        ("whsec_not*base64", "the secret is not whsec_<base64>"),
        ("whsec_AAE", "the secret is not whsec_<base64>"),
        # Characters outside the alphabet are refused, not skipped ("AAEC" alone would decode).
        ("whsec_AAEC*", "the secret is not whsec_<base64>"),
        ("whsec_AA EC", "the secret is not whsec_<base64>"),
    ],
)
def test_secret_key_refuses_what_is_not_base64(bad: str, message: str) -> None:
    with pytest.raises(WebhookVerificationError, match=f"^{re.escape(message)}$"):
        secret_key(bad)


def test_signed_headers_carry_id_timestamp_and_signature() -> None:
    headers = signed_headers(SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_TS, body=SPEC_BODY)
    assert headers == {
        HEADER_ID: SPEC_ID,
        HEADER_TIMESTAMP: str(SPEC_TS),
        HEADER_SIGNATURE: SPEC_SIGNATURE,
    }
    assert (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE) == (
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    )


def test_verify_accepts_the_vector_and_any_of_several_signatures() -> None:
    _verify()
    _verify(signature=f"v1,AAAA {SPEC_SIGNATURE}")
    _verify(signature=f"{SPEC_SIGNATURE} v1,AAAA")


@pytest.mark.parametrize(
    "override",
    [
        {"body": SPEC_BODY + b" "},
        {"msg_id": SPEC_ID + "x"},
        {"signature": "v1,AAAA"},
        {"signature": SPEC_SIGNATURE.replace("v1,", "v2,")},
        {"signature": ""},
        {"secret": "whsec_AAEC"},
    ],
)
def test_verify_refuses_anything_changed(override: dict[str, object]) -> None:
    with pytest.raises(WebhookVerificationError, match=r"^no signature matches$"):
        _verify(**override)


def test_a_changed_timestamp_fails_the_signature() -> None:
    with pytest.raises(WebhookVerificationError, match=r"^no signature matches$"):
        _verify(timestamp=str(SPEC_TS + 1), now=float(SPEC_TS + 1))


@pytest.mark.parametrize("bad", ["", "abc", "12.5", "-1614265330", "١٦١٤٢٦٥٣٣٠", "1e9", "0x10"])
def test_a_timestamp_that_is_not_unix_seconds_is_refused(bad: str) -> None:
    with pytest.raises(WebhookVerificationError, match=r"^webhook-timestamp must be unix seconds$"):
        _verify(timestamp=bad)
    assert not is_valid(SPEC_SECRET, msg_id=SPEC_ID, timestamp=bad, signature="v1,x", body=b"")


@pytest.mark.parametrize("skew", [DEFAULT_TOLERANCE_SECONDS, -DEFAULT_TOLERANCE_SECONDS, 0])
def test_the_tolerance_edge_is_inclusive(skew: int) -> None:
    _verify(now=float(SPEC_TS + skew))


@pytest.mark.parametrize("skew", [DEFAULT_TOLERANCE_SECONDS + 1, -DEFAULT_TOLERANCE_SECONDS - 1])
def test_one_second_past_the_tolerance_is_refused(skew: int) -> None:
    with pytest.raises(WebhookVerificationError, match=r"more than 300 s away"):
        _verify(now=float(SPEC_TS + skew))


def test_a_custom_tolerance_and_none() -> None:
    _verify(now=float(SPEC_TS + 10), tolerance_seconds=10)
    with pytest.raises(WebhookVerificationError, match="more than 9 s"):
        _verify(now=float(SPEC_TS + 10), tolerance_seconds=9)
    # None skips freshness entirely (inspecting an old delivery by hand) but not the signature.
    _verify(now=float(SPEC_TS + 10**9), tolerance_seconds=None)
    with pytest.raises(WebhookVerificationError, match=r"^no signature matches$"):
        _verify(now=float(SPEC_TS + 10**9), tolerance_seconds=None, body=b"{}")


def test_is_valid_is_true_only_for_a_fresh_valid_request() -> None:
    import time

    now = int(time.time())
    good = sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=now, body=SPEC_BODY)
    ok = {"msg_id": SPEC_ID, "timestamp": str(now), "signature": good, "body": SPEC_BODY}
    assert is_valid(SPEC_SECRET, **ok) is True
    assert is_valid(SPEC_SECRET, **{**ok, "body": b"{}"}) is False
    assert is_valid(SPEC_SECRET, **{**ok, "signature": "v1,AAAA"}) is False
    # The specification vector is years old: valid signature, stale timestamp.
    stale = {"msg_id": SPEC_ID, "timestamp": str(SPEC_TS), "signature": SPEC_SIGNATURE}
    assert is_valid(SPEC_SECRET, body=SPEC_BODY, **stale) is False
