"""Reference data through the Redis cache on the real PostgreSQL and Redis: Decimal-safe JSON,
cache hits without queries, invalidation after an admin change commits, the database fallback when
Redis is down, and intake refusing stale rates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from jivapay.database.base import utcnow
from jivapay.database.models import AuditLog, ExchangeRate
from jivapay.enums import Role
from jivapay.schemas.gateway import PayInCreate
from jivapay.services import gateway_service, reference_data
from jivapay.services.reference_data import RateView
from jivapay.utils.config_loader import get_typed_config_value, set_config_value
from jivapay.utils.exceptions import NotFound, StaleExchangeRate, ValidationFailed
from tests.factories import make_bank_method, make_reference, make_store, make_user
from tests.sql_statements import recorded_statements

D = Decimal
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def _clean_cache(services: dict[str, str]) -> Iterator[None]:
    reference_data.REDIS_URL_OVERRIDE = None
    yield
    reference_data.REDIS_URL_OVERRIDE = None
    reference_data.clear_cache()


def _rate(db: Session, ref) -> RateView:
    return reference_data.get_exchange_rate(
        db, crypto_currency_id=ref.crypto.id, fiat_currency_id=ref.fiat.id
    )


def test_rate_is_cached_as_decimal_strings_and_a_hit_queries_nothing(
    db: Session, redis_client: Any
) -> None:
    ref = make_reference(db, rate=D("91.12345678"))
    with recorded_statements() as first:
        view = _rate(db, ref)
    assert len(first) == 1
    assert view.median_rate == D("91.12345678") and isinstance(view.buy_rate, Decimal)
    raw = redis_client.get(reference_data.rate_key(ref.crypto.id, ref.fiat.id))
    stored = json.loads(raw)
    assert stored["median_rate"] == "91.12345678"  # a string, never a float
    assert 0 < redis_client.ttl(reference_data.rate_key(ref.crypto.id, ref.fiat.id)) <= 30

    with recorded_statements() as second:
        again = _rate(db, ref)
    assert second == [] and again == view


def test_a_rate_is_kept_in_the_process_for_a_second_then_read_from_redis_again(
    db: Session, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intake reads the rate on every order: the process keeps its copy `LOCAL_RATE_SECONDS`,
    so a change made by another process (here: straight into Redis) shows after that second."""
    clock = [1000.0]
    monkeypatch.setattr(reference_data, "monotonic", lambda: clock[0])
    ref = make_reference(db, rate=D("100"))
    key = reference_data.rate_key(ref.crypto.id, ref.fiat.id)
    assert _rate(db, ref).median_rate == D("100")
    elsewhere = {**json.loads(redis_client.get(key)), "median_rate": "101.5"}
    redis_client.set(key, json.dumps(elsewhere))
    clock[0] += reference_data.LOCAL_RATE_SECONDS - 0.01
    assert _rate(db, ref).median_rate == D("100")  # this process's copy, no Redis call
    clock[0] += 0.02
    assert _rate(db, ref).median_rate == D("101.5")


def test_banks_methods_and_methods_for_fiat_are_cached(db: Session) -> None:
    ref = make_reference(db)
    make_bank_method(db, ref)
    bank = reference_data.get_bank_details(db, code=ref.bank.code)
    method = reference_data.get_payment_method_details(db, payment_method_id=ref.method.id)
    listed = reference_data.methods_for_fiat(db, fiat_currency_id=ref.fiat.id)
    assert (bank.id, method.code) == (ref.bank.id, ref.method.code)
    assert [(m.method.code, [b.code for b in m.banks]) for m in listed] == [
        (ref.method.code, [ref.bank.code])
    ]
    with recorded_statements() as queries:
        # Cached under both id and code by the first read.
        assert reference_data.get_bank_details(db, bank_id=ref.bank.id) == bank
        assert reference_data.get_payment_method_details(db, code=ref.method.code) == method
        assert reference_data.methods_for_fiat(db, fiat_currency_id=ref.fiat.id) == listed
    assert queries == []
    with pytest.raises(NotFound):
        reference_data.get_bank_details(db, code="no-such-bank")


def test_admin_rate_change_invalidates_after_commit_and_is_audited(
    db: Session, redis_client: Any
) -> None:
    ref = make_reference(db, rate=D("100"))
    admin = make_user(db, Role.ADMIN)
    assert _rate(db, ref).median_rate == D("100")
    key = reference_data.rate_key(ref.crypto.id, ref.fiat.id)

    new = reference_data.set_exchange_rate(
        db, crypto=ref.crypto.code, fiat=ref.fiat.id, buy="99", sell="102.5", actor_user_id=admin.id
    )
    assert new.median_rate == D("100.75") and new.source == "manual"
    # Not invalidated before the commit: a rollback must leave the cache as it was.
    assert redis_client.exists(key) == 1
    db.commit()
    assert redis_client.exists(key) == 0
    assert _rate(db, ref).median_rate == D("100.75")
    audit = db.scalars(select(AuditLog).where(AuditLog.action == "exchange_rate.set")).all()
    mine = [a for a in audit if a.target_id == f"{ref.crypto.code}/{ref.fiat.code}"]
    assert len(mine) == 1 and mine[0].user_id == admin.id
    assert mine[0].details["old"]["median_rate"] == "100.00000000"
    assert mine[0].details["new"]["median_rate"] == "100.75000000"


@pytest.mark.parametrize(
    "bad",
    [
        {"buy": "0"},
        {"buy": "-1"},
        {"sell": 1.5},
        {"sell": "abc"},
        {"buy": "1e13"},
        {"buy": "100000000000000000000"},  # beyond what rounding to 8 places can hold
        {"median": "1e30"},
        {"sell": "-1e30"},
        {"buy": "0.000000001"},  # rounds to zero
        {"buy": "999999999999.999999995"},  # above NUMERIC(20, 8), not rounded into it
        {"median": "95"},  # outside [buy, sell]
    ],
)
def test_invalid_rates_are_refused(db: Session, bad: dict[str, Any]) -> None:
    ref = make_reference(db)
    values = {"buy": "90", "sell": "91", **bad}
    with pytest.raises(ValidationFailed):
        reference_data.set_exchange_rate(
            db, crypto=ref.crypto.id, fiat=ref.fiat.id, actor_user_id=None, **values
        )


def test_bank_and_method_changes_invalidate_their_entries(db: Session) -> None:
    ref = make_reference(db)
    make_bank_method(db, ref)
    assert reference_data.methods_for_fiat(db, fiat_currency_id=ref.fiat.id)
    assert reference_data.get_bank_details(db, bank_id=ref.bank.id).name == "Test bank"

    reference_data.update_bank(db, bank_id=ref.bank.id, name="Renamed bank", actor_user_id=None)
    db.commit()
    assert reference_data.get_bank_details(db, bank_id=ref.bank.id).name == "Renamed bank"
    listed = reference_data.methods_for_fiat(db, fiat_currency_id=ref.fiat.id)
    assert listed[0].banks[0].name == "Renamed bank"

    reference_data.update_payment_method(
        db, payment_method_id=ref.method.id, is_active=False, actor_user_id=None
    )
    db.commit()
    assert reference_data.methods_for_fiat(db, fiat_currency_id=ref.fiat.id) == ()
    assert reference_data.get_payment_method_details(db, code=ref.method.code).is_active is False


def test_redis_down_falls_back_to_the_database(db: Session) -> None:
    ref = make_reference(db, rate=D("77.7"))
    make_bank_method(db, ref)
    reference_data.REDIS_URL_OVERRIDE = DEAD_REDIS
    with capture_logs() as logs:
        assert _rate(db, ref).median_rate == D("77.7")
        assert reference_data.get_bank_details(db, bank_id=ref.bank.id).code == ref.bank.code
        assert reference_data.methods_for_fiat(db, fiat_currency_id=ref.fiat.id)
        reference_data.set_exchange_rate(
            db, crypto=ref.crypto.id, fiat=ref.fiat.id, buy="80", sell="80", actor_user_id=None
        )
        db.commit()  # invalidation fails: logged, not raised
    events = [e["event"] for e in logs]
    assert "reference_cache_unavailable" in events
    assert "reference_cache_invalidation_failed" in events
    assert _rate(db, ref).median_rate == D("80")


def _payin(ref, **overrides: Any) -> PayInCreate:
    data = {
        "merchant_order_id": f"m-{utcnow().timestamp()}",
        "amount_fiat": "1000.00",
        "fiat_currency": ref.fiat.code,
    }
    return PayInCreate.model_validate({**data, **overrides})


def test_intake_refuses_a_stale_rate_even_when_cached(db: Session) -> None:
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, lower=D("10"), upper=D("50000"))
    created = gateway_service.create_payin(db, store=store.store.id, data=_payin(ref))
    assert created.exchange_rate == D("100")  # the fresh rate is now cached

    max_age = int(get_typed_config_value("EXCHANGE_RATE_MAX_AGE_SECONDS"))
    reference_data.set_exchange_rate(
        db,
        crypto=ref.crypto.id,
        fiat=ref.fiat.id,
        buy="101",
        sell="101",
        actor_user_id=None,
        now=utcnow() - timedelta(seconds=max_age + 5),
    )
    db.commit()
    with pytest.raises(StaleExchangeRate) as info:
        gateway_service.create_payin(db, store=store.store.id, data=_payin(ref))
    assert info.value.status_code == 503

    # The check reads the age, not the cache: a shorter limit refuses a cached rate too.
    reference_data.set_exchange_rate(
        db, crypto=ref.crypto.id, fiat=ref.fiat.id, buy="102", sell="102", actor_user_id=None
    )
    db.commit()
    assert _rate(db, ref).median_rate == D("102")
    set_config_value(db, "EXCHANGE_RATE_MAX_AGE_SECONDS", 1)
    later = utcnow() + timedelta(seconds=5)
    with pytest.raises(StaleExchangeRate):
        reference_data.get_fresh_exchange_rate(
            db, crypto_currency_id=ref.crypto.id, fiat_currency_id=ref.fiat.id, now=later
        )


def test_missing_rate_is_stale_for_intake(db: Session) -> None:
    ref = make_reference(db)
    db.delete(db.get(ExchangeRate, ref.rate.id))
    db.flush()
    with pytest.raises(NotFound):
        _rate(db, ref)
    with pytest.raises(StaleExchangeRate):
        reference_data.get_fresh_exchange_rate(
            db, crypto_currency_id=ref.crypto.id, fiat_currency_id=ref.fiat.id
        )
