"""Run-time settings: typed reads, defaults, invalid values, cache invalidation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select, update

from jivapay.database.models import ConfigurationSetting
from jivapay.utils import config_loader
from jivapay.utils.config_loader import (
    SETTINGS,
    get_typed_config_value,
    seed_defaults,
    set_config_value,
)
from jivapay.utils.exceptions import ValidationFailed


def test_every_domain_setting_is_declared_once_with_a_default_type() -> None:
    required = {
        "MAX_ORDER_RETRIES",
        "RETRY_DELAY_SECONDS",
        "RETRY_BACKOFF_FACTOR",
        "RATE_LIMIT_DEFAULT",
        "RATE_LIMIT_GATEWAY_INIT",
        "RATE_LIMIT_LOGIN",
        "PAYIN_PAYMENT_TIMEOUT_MINUTES",
        "TRADER_CONFIRM_TIMEOUT_MINUTES",
        "PAYOUT_TIMEOUT_MINUTES",
        "EXCHANGE_RATE_MAX_AGE_SECONDS",
        "FRAUD_MANUAL_REVIEW_THRESHOLD",
        "FRAUD_DENY_THRESHOLD",
        "CALLBACK_MAX_ATTEMPTS",
    }
    assert required <= set(SETTINGS)
    assert all(spec.description for spec in SETTINGS.values())


def test_missing_row_gives_the_default(db) -> None:  # type: ignore[no-untyped-def]
    assert get_typed_config_value("MAX_ORDER_RETRIES") == 5
    assert get_typed_config_value("RETRY_BACKOFF_FACTOR") == Decimal("2")
    assert get_typed_config_value("FRAUD_DENY_THRESHOLD") is None


def test_seed_defaults_is_idempotent(db) -> None:  # type: ignore[no-untyped-def]
    first = seed_defaults(db)
    second = seed_defaults(db)
    count = len(db.scalars(select(ConfigurationSetting.key)).all())
    assert first == len(SETTINGS)
    assert second == 0
    assert count == len(SETTINGS)


def test_set_value_is_typed_and_invalidates_the_cache(db) -> None:  # type: ignore[no-untyped-def]
    assert get_typed_config_value("MAX_ORDER_RETRIES") == 5  # now cached
    set_config_value(db, "MAX_ORDER_RETRIES", 7)
    assert get_typed_config_value("MAX_ORDER_RETRIES") == 7
    set_config_value(db, "FRAUD_DENY_THRESHOLD", "150000.50")
    assert get_typed_config_value("FRAUD_DENY_THRESHOLD") == Decimal("150000.50")
    set_config_value(db, "FRAUD_CHECKS_ENABLED", "off")
    assert get_typed_config_value("FRAUD_CHECKS_ENABLED") is False


def test_cache_hides_direct_writes_until_invalidated(db) -> None:  # type: ignore[no-untyped-def]
    seed_defaults(db)
    assert get_typed_config_value("RETRY_DELAY_SECONDS") == 10
    db.execute(
        update(ConfigurationSetting)
        .where(ConfigurationSetting.key == "RETRY_DELAY_SECONDS")
        .values(value="30")
    )
    assert get_typed_config_value("RETRY_DELAY_SECONDS") == 10
    config_loader.invalidate_cache("RETRY_DELAY_SECONDS")
    assert get_typed_config_value("RETRY_DELAY_SECONDS") == 30


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("MAX_ORDER_RETRIES", "five"),
        ("RETRY_BACKOFF_FACTOR", "NaN"),
        ("FRAUD_CHECKS_ENABLED", "perhaps"),
        ("RATE_LIMIT_DEFAULT", "lots per minute"),
    ],
)
def test_invalid_stored_value_falls_back_to_default_with_warning(db, key, bad) -> None:  # type: ignore[no-untyped-def]
    from structlog.testing import capture_logs

    seed_defaults(db)
    db.execute(
        update(ConfigurationSetting).where(ConfigurationSetting.key == key).values(value=bad)
    )
    with capture_logs() as logs:
        value = get_typed_config_value(key)
    assert value == SETTINGS[key].default
    assert any(e["event"] == "invalid_setting_value" and e["key"] == key for e in logs)


def test_set_refuses_invalid_and_unknown(db) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationFailed):
        set_config_value(db, "MAX_ORDER_RETRIES", "many")
    with pytest.raises(ValidationFailed):
        set_config_value(db, "RATE_LIMIT_DEFAULT", "100 per fortnightly")
    with pytest.raises(ValidationFailed):
        set_config_value(db, "NO_SUCH_SETTING", 1)
    assert db.get(ConfigurationSetting, "MAX_ORDER_RETRIES") is None
