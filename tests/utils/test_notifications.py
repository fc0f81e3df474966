"""The secret scrubber and `report_critical_error`, which must never raise."""

from __future__ import annotations

from typing import Any

import pytest
from sentry_sdk.transport import Transport
from structlog.testing import capture_logs

from jivapay.config import get_settings
from jivapay.security import generate_callback_secret
from jivapay.services.callback_service import ClaimedDelivery
from jivapay.utils import notifications
from jivapay.utils.notifications import (
    FILTERED,
    mask_card_numbers,
    report_critical_error,
    scrub,
    scrub_event,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111111111111111 used", "card ****1111 used"),
        ("4111 1111 1111 1111", "****1111"),
        ("4111-1111-1111-1111", "****1111"),
        ("IBAN-ish 2200700112345678901", "IBAN-ish ****8901"),
    ],
)
def test_card_numbers_are_masked_to_last_four(text: str, expected: str):
    assert mask_card_numbers(text) == expected


@pytest.mark.parametrize("text", ["amount 1500.00", "order 123456789", "ts 1732646400", "ab12"])
def test_short_numbers_are_left_alone(text: str):
    assert mask_card_numbers(text) == text


def test_scrub_filters_secret_keys_and_masks_values_at_any_depth():
    event = {
        "password": "hunter2",
        "Authorization": "Bearer abc",
        "private_api_key": "pk",
        "callback_secret": "s",
        "req_number": "4111111111111111",
        "card_last4": "1111",
        "company": "ACME",
        "span_id": "abc",
        "empty_token": "",
        "nested": {"list": [{"note": "paid from 5500 0000 0000 0004"}], "cvv": 123},
        "tuple": ("x", "4111111111111111"),
        "amount": 10,
    }

    cleaned = scrub(event)

    assert cleaned["password"] == FILTERED
    assert cleaned["Authorization"] == FILTERED
    assert cleaned["private_api_key"] == FILTERED
    assert cleaned["callback_secret"] == FILTERED
    assert cleaned["req_number"] == FILTERED
    assert cleaned["nested"]["cvv"] == FILTERED
    assert cleaned["nested"]["list"][0]["note"] == "paid from ****0004"
    assert cleaned["tuple"] == ("x", "****1111")
    # Harmless keys that merely contain "pan", last-4 digits and empty values stay readable.
    assert cleaned["company"] == "ACME"
    assert cleaned["span_id"] == "abc"
    assert cleaned["card_last4"] == "1111"
    assert cleaned["empty_token"] == ""
    assert cleaned["amount"] == 10
    assert event["password"] == "hunter2"  # the input is not modified


def test_scrub_event_cleans_a_sentry_event():
    event = {
        "exception": {"values": [{"value": "bad card 4111111111111111"}]},
        "request": {"headers": {"X-Signature": "abc", "Accept": "json"}},
    }
    cleaned = scrub_event(event)
    assert cleaned["exception"]["values"][0]["value"] == "bad card ****1111"
    assert cleaned["request"]["headers"] == {"X-Signature": FILTERED, "Accept": "json"}


def test_report_critical_error_logs_scrubbed_context():
    with capture_logs() as logs:
        report_critical_error(
            ValueError("card 4111111111111111 declined"),
            "payout to 5500000000000004 failed",
            order_id=7,
            api_key="secret-key",
        )

    [entry] = [e for e in logs if e["event"] == "critical_error"]
    assert entry["error"] == "card ****1111 declined"
    assert entry["message"] == "payout to ****0004 failed"
    assert entry["api_key"] == FILTERED
    assert entry["order_id"] == 7
    assert entry["error_type"] == "ValueError"


class _Hostile(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() exploded")


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("repr() exploded")


def test_report_critical_error_never_raises(monkeypatch: pytest.MonkeyPatch):
    report_critical_error(_Hostile(), "hostile exception")
    report_critical_error(None, "no exception", thing=_Unprintable())

    def broken_log(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("log sink gone")

    monkeypatch.setattr(notifications.log, "error", broken_log)
    report_critical_error(RuntimeError("x"), "logging itself fails")


def test_init_sentry_is_off_without_dsn(monkeypatch: pytest.MonkeyPatch):
    from jivapay.config import reset_settings_cache

    monkeypatch.delenv("SENTRY_DSN", raising=False)
    reset_settings_cache()
    try:
        assert notifications.init_sentry("test") is False
    finally:
        reset_settings_cache()


def test_card_masking_leaves_ids_and_durations_alone() -> None:
    from jivapay.utils.notifications import mask_card_numbers

    assert mask_card_numbers("request 8fdd4de71d3640b123456789242c613") == (
        "request 8fdd4de71d3640b123456789242c613"
    )
    assert mask_card_numbers("succeeded in 0.123456789012345s") == "succeeded in 0.123456789012345s"
    assert mask_card_numbers("pay to 4276380012345678.") == "pay to ****5678."
    assert mask_card_numbers("card 4111-1111-1111-1111 ok") == "card ****1111 ok"


class _CapturingTransport(Transport):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        self.events.extend(item.payload.json for item in envelope.items if item.type == "event")


def _fail_holding_secrets(secret: str) -> None:
    # As in `callback_service.deliver_callback` and the many functions holding the settings.
    claimed = ClaimedDelivery(
        delivery_id=1,
        store_id=1,
        event_id="evt_1",
        url="https://merchant.example/hook",
        body=b"{}",
        secret=secret,
        attempt=1,
    )
    settings = get_settings()
    assert claimed and settings
    raise RuntimeError("the database went away while recording the attempt")


def test_a_sentry_report_carries_no_secret_held_in_a_frame(monkeypatch: pytest.MonkeyPatch):
    import sentry_sdk

    transport = _CapturingTransport()
    options = notifications.sentry_options("test") | {
        "dsn": "https://public@sentry.example.invalid/1",
        "transport": transport,
        "default_integrations": False,
    }
    sentry_sdk.init(**options)
    secret = generate_callback_secret()
    try:
        try:
            _fail_holding_secrets(secret)
        except RuntimeError:
            sentry_sdk.capture_exception()
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init(dsn=None)
    [event] = transport.events
    assert "_fail_holding_secrets" in str(event)  # the stack trace is still there
    settings = get_settings()
    held = {
        "callback secret": secret.removeprefix("whsec_"),
        "SECRET_KEY": settings.SECRET_KEY,
        "DATA_ENCRYPTION_KEY": settings.DATA_ENCRYPTION_KEY,
    }
    assert [name for name, value in held.items() if value in str(event)] == []
