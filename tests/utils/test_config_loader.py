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
        # Out of the declared bounds: stored before the bound existed, or around the admin API.
        ("IDEMPOTENCY_KEY_TTL_HOURS", "100000000"),
        ("ASSIGNMENT_BATCH_SIZE", "1000000"),
        ("RETRY_BACKOFF_FACTOR", "1000000"),
        ("RATE_LIMIT_DEFAULT", "1/1000000000000 year"),
        ("CALLBACK_RETRY_SCHEDULE_SECONDS", "[5, 100000000000000000000]"),
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
    with pytest.raises(ValidationFailed, match="between 1 and 720"):
        set_config_value(db, "IDEMPOTENCY_KEY_TTL_HOURS", 100_000_000)
    with pytest.raises(ValidationFailed, match="at most a day"):
        set_config_value(db, "RATE_LIMIT_DEFAULT", "1/1000000000000 year")
    assert db.get(ConfigurationSetting, "MAX_ORDER_RETRIES") is None


_PYTHON_TYPES = {
    "int": int,
    "decimal": Decimal,
    "bool": bool,
    "str": str,
    "float": float,
}


def test_the_typed_settings_object_matches_the_declared_table() -> None:
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_loader.RuntimeSettings)
    assert [f.name for f in dataclasses.fields(config_loader.RuntimeSettings)] == list(SETTINGS)
    for key, spec in SETTINGS.items():
        expected = _PYTHON_TYPES.get(spec.value_type.value)
        if expected is None:  # JSON: any shape
            continue
        allowed = typing.get_args(hints[key]) or (hints[key],)
        assert expected in allowed, (key, hints[key], spec.value_type)
        if spec.default is None:
            assert type(None) in allowed, key
        else:
            assert isinstance(spec.default, expected), key


def test_runtime_settings_are_one_frozen_object_read_through_the_session(db) -> None:  # type: ignore[no-untyped-def]
    set_config_value(db, "MAX_ORDER_RETRIES", 7)
    config_loader.invalidate_cache()
    settings = config_loader.runtime_settings(db)  # sees the caller's uncommitted write
    assert settings.MAX_ORDER_RETRIES == 7 and Decimal("2") == settings.RETRY_BACKOFF_FACTOR
    with pytest.raises(dataclasses_frozen_error()):
        settings.MAX_ORDER_RETRIES = 1  # type: ignore[misc]
    assert config_loader.runtime_settings(db) is settings  # cached: no second load


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_an_assignment_checks_out_exactly_one_connection(committed_db) -> None:  # type: ignore[no-untyped-def]
    """A cold settings cache during an assignment is read through the assignment's own session."""
    from sqlalchemy import event

    from jivapay.database.engine import get_engine
    from jivapay.services.order_processor import process_incoming_order
    from tests.factories import (
        make_incoming,
        make_reference,
        make_requisite,
        make_store,
        make_trader,
    )

    with committed_db() as session, session.begin():
        ref = make_reference(session, rate=Decimal("50"))
        store = make_store(session, ref, balance=Decimal("1000"))
        make_requisite(session, make_trader(session, ref), ref)
        incoming_id = make_incoming(session, store, ref, amount_fiat=Decimal("500.00")).id

    checkouts: list[int] = []
    in_use = 0
    most = 0

    def checkout(*_: object) -> None:
        nonlocal in_use, most
        checkouts.append(1)
        in_use += 1
        most = max(most, in_use)

    def checkin(*_: object) -> None:
        nonlocal in_use
        in_use -= 1

    engine = get_engine()
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    config_loader.invalidate_cache()  # the settings must be loaded during the assignment
    try:
        result = process_incoming_order(incoming_id)
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)
    assert result.order_id is not None, result
    assert (len(checkouts), most) == (1, 1)
