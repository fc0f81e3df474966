"""Account numbers a requisite may have (up to 30 digits, `requisite_service.ACCOUNT_LENGTH`) are
masked by the log and Sentry scrubber, as card numbers are."""

from __future__ import annotations

import pytest

from jivapay.services.requisite_service import ACCOUNT_LENGTH, validate_number
from jivapay.utils.notifications import mask_card_numbers, scrub_event

RUB_ACCOUNT = "40817810099910004312"  # a 20-digit Russian current account number


@pytest.mark.parametrize("number", [RUB_ACCOUNT, "12345678901234567890123456"])
def test_valid_account_numbers_are_masked_in_logs_and_reports(number: str) -> None:
    assert len(number) in ACCOUNT_LENGTH
    assert validate_number(number, payment_method="account") == number  # a valid requisite
    event = {
        "exception": {"values": [{"stacktrace": {"frames": [{"vars": {"n": number}}]}}]},
        "message": f"requisite {number} failed",
    }
    scrubbed = str(scrub_event(event))
    masked = mask_card_numbers(f"number={number}")
    assert number not in masked
    assert number not in scrubbed
