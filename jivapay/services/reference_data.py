"""Reference data read through a Redis cache: exchange rates, banks, payment methods and which
methods (with their banks) a fiat currency offers; plus the admin-side changes that invalidate it.

Reads try Redis first and fall back to the database on a miss or when Redis fails (a failure is
logged, never raised). Values are JSON with every Decimal as a string, never a float. Rates live
`RATE_TTL_SECONDS` in the cache, banks and methods `REFERENCE_TTL_SECONDS`. Every admin change
(`set_exchange_rate`, `update_bank`, `update_payment_method`, `set_bank_method_availability`) is
audited and deletes the affected keys once its transaction commits, so no reader can re-cache the
old row between the delete and the commit. If Redis is down at that moment the old value lives at
most one TTL.

A rate read from Redis or the database is also kept in the process for `LOCAL_RATE_SECONDS` (1 s):
intake reads it on every order, and the Redis round trip was a twentieth of an intake's CPU
(docs/performance.md). A change therefore reaches the other processes up to a second after its
commit (the process that made it forgets its copy with the Redis keys); the freshness rule is
checked on every read all the same.

The freshness rule of intake (docs/money.md: a rate older than `EXCHANGE_RATE_MAX_AGE_SECONDS`
refuses the order) lives here only, in `get_fresh_exchange_rate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from time import monotonic
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import (
    AvailableBankMethod,
    Bank,
    CryptoCurrency,
    ExchangeRate,
    FiatCurrency,
    PaymentMethod,
)
from jivapay.database.utils import call_after_commit, lock_or_create
from jivapay.enums import RateSource
from jivapay.money import CRYPTO_QUANTUM, HUNDRED, MAX_CRYPTO, to_decimal
from jivapay.services.audit_logger import log_event
from jivapay.utils.config_loader import runtime_settings
from jivapay.utils.exceptions import NotFound, StaleExchangeRate, ValidationFailed
from jivapay.utils.redis_client import REDIS_ERRORS, get_redis, namespace

log = structlog.get_logger(__name__)

RATE_TTL_SECONDS = 30
LOCAL_RATE_SECONDS = 1.0
REFERENCE_TTL_SECONDS = 300
MAX_RATE = MAX_CRYPTO  # NUMERIC(20, 8)
# Tests point the cache at a dead Redis here; None means `REDIS_URL`.
REDIS_URL_OVERRIDE: str | None = None


# Currency codes never change once created (admins add currencies, they do not rename them), so a
# process keeps them after the first lookup: intake and every status change name both currencies.
_CURRENCY_CODES: dict[tuple[type[Any], int], str] = {}


def currency_code(
    session: Session, model: type[FiatCurrency] | type[CryptoCurrency], currency_id: int
) -> str | None:
    """The code of a fiat or crypto currency by id (cached per process), or None if unknown."""
    key = (model, currency_id)
    code = _CURRENCY_CODES.get(key)
    if code is None:
        code = session.scalar(select(model.code).where(model.id == currency_id))
        if code is None:
            return None
        _CURRENCY_CODES[key] = code
    return code


# --------------------------------------------------------------------------- views


@dataclass(frozen=True)
class RateView:
    crypto_currency_id: int
    fiat_currency_id: int
    buy_rate: Decimal
    sell_rate: Decimal
    median_rate: Decimal
    source: str
    updated_at: datetime


@dataclass(frozen=True)
class BankView:
    id: int
    code: str
    name: str
    country_id: int | None
    is_active: bool


@dataclass(frozen=True)
class PaymentMethodView:
    id: int
    code: str
    name: str
    is_active: bool


@dataclass(frozen=True)
class MethodBanks:
    """A payment method available in a fiat, with the banks that offer it there."""

    method: PaymentMethodView
    banks: tuple[BankView, ...]


def _rate_view(row: ExchangeRate) -> RateView:
    return RateView(
        crypto_currency_id=row.crypto_currency_id,
        fiat_currency_id=row.fiat_currency_id,
        buy_rate=row.buy_rate,
        sell_rate=row.sell_rate,
        median_rate=row.median_rate,
        source=row.source,
        updated_at=row.updated_at,
    )


def _bank_view(row: Bank) -> BankView:
    return BankView(row.id, row.code, row.name, row.country_id, row.is_active)


def _method_view(row: PaymentMethod) -> PaymentMethodView:
    return PaymentMethodView(row.id, row.code, row.name, row.is_active)


# --------------------------------------------------------------------------- cache


def _key(*parts: object) -> str:
    return ":".join([namespace(), "ref", *(str(p) for p in parts)])


def rate_key(crypto_currency_id: int, fiat_currency_id: int) -> str:
    return _key("rate", crypto_currency_id, fiat_currency_id)


def _bank_keys(bank: BankView | Bank) -> list[str]:
    return [_key("bank", "id", bank.id), _key("bank", "code", bank.code)]


def _method_keys(method: PaymentMethodView | PaymentMethod) -> list[str]:
    return [_key("method", "id", method.id), _key("method", "code", method.code)]


def _methods_key(fiat_currency_id: int) -> str:
    return _key("methods", fiat_currency_id)


def _json_default(value: object) -> str:
    # Decimals as exact strings (never floats), datetimes as ISO 8601.
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _cache_get(key: str) -> Any:
    try:
        raw = get_redis(REDIS_URL_OVERRIDE).get(key)
    except REDIS_ERRORS as exc:
        log.warning("reference_cache_unavailable", op="get", key=key, error=repr(exc))
        return None
    if raw is None:
        return None
    try:
        return json.loads(str(raw))
    except ValueError:
        log.warning("reference_cache_corrupt", key=key)
        return None


def _cache_set(keys: Iterable[str], value: object, ttl: int) -> None:
    payload = json.dumps(value, default=_json_default)
    try:
        pipe = get_redis(REDIS_URL_OVERRIDE).pipeline(transaction=False)
        for key in keys:
            pipe.set(key, payload, ex=ttl)
        pipe.execute()
    except REDIS_ERRORS as exc:
        log.warning("reference_cache_unavailable", op="set", error=repr(exc))


def _cache_delete(keys: list[str]) -> None:
    if not keys:
        return
    for key in keys:
        _LOCAL_RATES.pop(key, None)
    try:
        get_redis(REDIS_URL_OVERRIDE).delete(*keys)
    except REDIS_ERRORS as exc:
        log.warning("reference_cache_invalidation_failed", keys=keys, error=repr(exc))


def invalidate_after_commit(session: Session, keys: list[str]) -> None:
    """Delete cache `keys` once `session` commits (nothing happens on rollback)."""
    frozen = list(dict.fromkeys(keys))
    call_after_commit(session, lambda: _cache_delete(frozen), label="reference_cache_invalidate")


def clear_cache() -> int:
    """Delete every cached reference key of this deployment (and this process's currency codes);
    returns how many Redis keys."""
    _CURRENCY_CODES.clear()
    _LOCAL_RATES.clear()
    try:
        client = get_redis(REDIS_URL_OVERRIDE)
        keys = list(client.scan_iter(match=_key("*"), count=500))
        if keys:
            client.delete(*keys)
        return len(keys)
    except REDIS_ERRORS as exc:
        log.warning("reference_cache_unavailable", op="clear", error=repr(exc))
        return 0


def _rate_from_json(data: dict[str, Any]) -> RateView:
    return RateView(
        crypto_currency_id=int(data["crypto_currency_id"]),
        fiat_currency_id=int(data["fiat_currency_id"]),
        buy_rate=Decimal(data["buy_rate"]),
        sell_rate=Decimal(data["sell_rate"]),
        median_rate=Decimal(data["median_rate"]),
        source=str(data["source"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )


def _bank_from_json(data: dict[str, Any]) -> BankView:
    return BankView(**data)


def _method_from_json(data: dict[str, Any]) -> PaymentMethodView:
    return PaymentMethodView(**data)


# --------------------------------------------------------------------------- reads


# rate key -> (monotonic expiry, view): this process's copies, `LOCAL_RATE_SECONDS` each.
_LOCAL_RATES: dict[str, tuple[float, RateView]] = {}


def get_exchange_rate(
    session: Session, *, crypto_currency_id: int, fiat_currency_id: int
) -> RateView:
    """The current rate of a (crypto, fiat) pair, cached; `NotFound` when the pair has none."""
    key = rate_key(crypto_currency_id, fiat_currency_id)
    local = _LOCAL_RATES.get(key)
    if local is not None and monotonic() < local[0]:
        return local[1]
    view = _shared_exchange_rate(session, key, crypto_currency_id, fiat_currency_id)
    _LOCAL_RATES[key] = (monotonic() + LOCAL_RATE_SECONDS, view)
    return view


def _shared_exchange_rate(
    session: Session, key: str, crypto_currency_id: int, fiat_currency_id: int
) -> RateView:
    cached = _cache_get(key)
    if isinstance(cached, dict):
        try:
            return _rate_from_json(cached)
        except (KeyError, TypeError, ValueError, ArithmeticError):
            log.warning("reference_cache_corrupt", key=key)
    row = session.scalars(
        select(ExchangeRate).where(
            ExchangeRate.crypto_currency_id == crypto_currency_id,
            ExchangeRate.fiat_currency_id == fiat_currency_id,
        )
    ).first()
    if row is None:
        raise NotFound("no exchange rate for this currency pair", code="exchange_rate_not_found")
    view = _rate_view(row)
    _cache_set([key], asdict(view), RATE_TTL_SECONDS)
    return view


def get_fresh_exchange_rate(
    session: Session,
    *,
    crypto_currency_id: int,
    fiat_currency_id: int,
    now: datetime | None = None,
) -> RateView:
    """The pair's rate for intake: `StaleExchangeRate` (503) when missing or too old."""
    try:
        view = get_exchange_rate(
            session, crypto_currency_id=crypto_currency_id, fiat_currency_id=fiat_currency_id
        )
    except NotFound as exc:
        raise StaleExchangeRate("no exchange rate for this store's currency pair") from exc
    max_age = runtime_settings(session).EXCHANGE_RATE_MAX_AGE_SECONDS
    if view.updated_at < (now or utcnow()) - timedelta(seconds=max_age):
        raise StaleExchangeRate(
            f"the exchange rate is older than {max_age} s",
            extra={"rate_updated_at": view.updated_at.isoformat()},
        )
    return view


def get_bank_details(
    session: Session, *, bank_id: int | None = None, code: str | None = None
) -> BankView:
    """One bank by id or code (cached); `NotFound` when it does not exist."""
    if (bank_id is None) == (code is None):
        raise ValidationFailed("give exactly one of bank_id and code")
    key = _key("bank", "id", bank_id) if bank_id is not None else _key("bank", "code", code)
    cached = _cache_get(key)
    if isinstance(cached, dict):
        return _bank_from_json(cached)
    stmt = select(Bank).where(Bank.id == bank_id if bank_id is not None else Bank.code == code)
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound("bank not found")
    view = _bank_view(row)
    _cache_set(_bank_keys(view), asdict(view), REFERENCE_TTL_SECONDS)
    return view


def get_payment_method_details(
    session: Session, *, payment_method_id: int | None = None, code: str | None = None
) -> PaymentMethodView:
    """One payment method by id or code (cached); `NotFound` when it does not exist."""
    if (payment_method_id is None) == (code is None):
        raise ValidationFailed("give exactly one of payment_method_id and code")
    key = (
        _key("method", "id", payment_method_id)
        if payment_method_id is not None
        else _key("method", "code", code)
    )
    cached = _cache_get(key)
    if isinstance(cached, dict):
        return _method_from_json(cached)
    stmt = select(PaymentMethod).where(
        PaymentMethod.id == payment_method_id
        if payment_method_id is not None
        else PaymentMethod.code == code
    )
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound("payment method not found")
    view = _method_view(row)
    _cache_set(_method_keys(view), asdict(view), REFERENCE_TTL_SECONDS)
    return view


def methods_for_fiat(session: Session, *, fiat_currency_id: int) -> tuple[MethodBanks, ...]:
    """Active payment methods offered in a fiat, each with its active banks (cached)."""
    key = _methods_key(fiat_currency_id)
    cached = _cache_get(key)
    if isinstance(cached, list):
        return tuple(
            MethodBanks(
                _method_from_json(item["method"]),
                tuple(_bank_from_json(b) for b in item["banks"]),
            )
            for item in cached
        )
    rows = session.execute(
        select(PaymentMethod, Bank)
        .join(AvailableBankMethod, AvailableBankMethod.payment_method_id == PaymentMethod.id)
        .join(Bank, Bank.id == AvailableBankMethod.bank_id)
        .where(
            AvailableBankMethod.fiat_currency_id == fiat_currency_id,
            AvailableBankMethod.is_active.is_(True),
            PaymentMethod.is_active.is_(True),
            Bank.is_active.is_(True),
        )
        .order_by(PaymentMethod.code, Bank.code)
    ).all()
    grouped: dict[int, tuple[PaymentMethodView, list[BankView]]] = {}
    for method, bank in rows:
        entry = grouped.setdefault(method.id, (_method_view(method), []))
        entry[1].append(_bank_view(bank))
    result = tuple(MethodBanks(m, tuple(banks)) for m, banks in grouped.values())
    _cache_set([key], [asdict(item) for item in result], REFERENCE_TTL_SECONDS)
    return result


# --------------------------------------------------------------------------- admin changes


def parse_rate(value: Any, *, field: str = "rate") -> Decimal:
    """A rate as a positive Decimal of at most 8 places (rounded half up) within NUMERIC(20, 8)."""
    raw = to_decimal(value, field=field)
    # Both bounds before rounding: quantizing a number of more than 20 integer digits to 8 places
    # exceeds the decimal context's precision and raises InvalidOperation, not a refusal. What
    # passes cannot round past MAX_RATE (it has 8 places), only down to zero.
    if raw <= 0:
        raise ValidationFailed(f"{field} must be positive")
    if raw > MAX_RATE:
        raise ValidationFailed(f"{field} is too large")
    rate = raw.quantize(CRYPTO_QUANTUM, rounding=ROUND_HALF_UP)
    if rate <= 0:
        raise ValidationFailed(f"{field} must be positive")
    return rate


def median_of(buy: Decimal, sell: Decimal) -> Decimal:
    """The midpoint of buy and sell, 8 places half up."""
    return ((buy + sell) / 2).quantize(CRYPTO_QUANTUM, rounding=ROUND_HALF_UP)


def check_median(buy: Decimal, sell: Decimal, median: Decimal) -> None:
    """The one rule of a rate's median, for a manual rate and the HTTP refresh alike: it lies
    between buy and sell (intake fixes the median on every order, so a median outside the spread
    would price orders at a rate neither side quotes)."""
    if not min(buy, sell) <= median <= max(buy, sell):
        raise ValidationFailed("median_rate must lie between buy_rate and sell_rate")


def exceeds_change_limit(old: Decimal, new: Decimal, limit: Decimal | None) -> bool:
    """Whether moving a median from `old` to `new` is a jump over `limit` percent (None: no limit)."""
    if limit is None or old <= 0:
        return False
    return abs(new - old) * HUNDRED / old > Decimal(limit)


def _resolve(session: Session, model: type[Any], ref: int | str, label: str) -> Any:
    if isinstance(ref, int):
        row = session.get(model, ref)
    else:
        row = session.scalars(select(model).where(model.code == ref.upper())).first()
    if row is None:
        raise NotFound(f"{label} {ref!r} not found")
    return row


def upsert_rate(
    session: Session,
    *,
    crypto_currency_id: int,
    fiat_currency_id: int,
    buy: Decimal,
    sell: Decimal,
    median: Decimal,
    source: RateSource,
    now: datetime,
    max_change_percent: Decimal | None = None,
) -> tuple[RateView | None, RateView]:
    """Write a pair's rate under a row lock; returns (old, new) and invalidates after commit.

    `max_change_percent` (the refresh's jump guard) refuses, with `ValidationFailed` and nothing
    written, a median that far from the LOCKED row's: a value read before the lock may already be
    replaced by a manual rate committed meanwhile.
    """
    values = {
        "buy_rate": buy,
        "sell_rate": sell,
        "median_rate": median,
        "source": source.value,
        "updated_at": now,
    }
    pair = {"crypto_currency_id": crypto_currency_id, "fiat_currency_id": fiat_currency_id}
    existed = session.scalar(select(ExchangeRate.id).filter_by(**pair)) is not None
    row = lock_or_create(session, ExchangeRate, pair, values)
    # A row this call inserted holds `median` already, so the guard passes it.
    if exceeds_change_limit(row.median_rate, median, max_change_percent):
        raise ValidationFailed(f"median {median} too far from {row.median_rate}")
    old = _rate_view(row) if existed else None
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    invalidate_after_commit(session, [rate_key(crypto_currency_id, fiat_currency_id)])
    return old, _rate_view(row)


def set_exchange_rate(
    session: Session,
    *,
    crypto: int | str,
    fiat: int | str,
    buy: Any,
    sell: Any,
    median: Any = None,
    source: RateSource = RateSource.MANUAL,
    actor_user_id: int | None = None,
    now: datetime | None = None,
    ip_address: str | None = None,
) -> RateView:
    """Set a pair's rate (ids or codes); median defaults to the midpoint. Audited."""
    crypto_row = _resolve(session, CryptoCurrency, crypto, "crypto currency")
    fiat_row = _resolve(session, FiatCurrency, fiat, "fiat currency")
    buy_rate, sell_rate = parse_rate(buy, field="buy_rate"), parse_rate(sell, field="sell_rate")
    median_rate = (
        median_of(buy_rate, sell_rate) if median is None else parse_rate(median, field="median")
    )
    check_median(buy_rate, sell_rate, median_rate)
    old, new = upsert_rate(
        session,
        crypto_currency_id=crypto_row.id,
        fiat_currency_id=fiat_row.id,
        buy=buy_rate,
        sell=sell_rate,
        median=median_rate,
        source=RateSource(source),
        now=now or utcnow(),
    )
    log_event(
        session,
        action="exchange_rate.set",
        user_id=actor_user_id,
        target_entity="exchange_rate",
        target_id=f"{crypto_row.code}/{fiat_row.code}",
        details={"old": asdict(old) if old else None, "new": asdict(new)},
        ip_address=ip_address,
    )
    return new


def _fiats_offering(session: Session, column: Any, value: int) -> list[int]:
    return list(
        session.scalars(select(AvailableBankMethod.fiat_currency_id).where(column == value))
    )


def _apply_changes(
    session: Session,
    row: Any,
    requested: dict[str, Any],
    *,
    entity: str,
    actor_user_id: int | None,
    ip_address: str | None = None,
) -> None:
    """Set the given (non-None) fields that differ, flush, and audit what changed."""
    changes = {k: v for k, v in requested.items() if v is not None and getattr(row, k) != v}
    for k, v in changes.items():
        setattr(row, k, v)
    session.flush()
    if changes:
        log_event(
            session,
            action=f"{entity}.update",
            user_id=actor_user_id,
            target_entity=entity,
            target_id=row.id,
            details={"changes": changes},
            ip_address=ip_address,
        )


def apply_reference_changes(
    session: Session,
    row: Any,
    requested: dict[str, Any],
    *,
    entity: str,
    actor_user_id: int | None,
    ip_address: str | None = None,
) -> bool:
    """Set the given (non-None) fields of any reference row that differ, audited; whether any did.

    The caller invalidates whatever cache keys the row feeds."""
    changed = any(v is not None and getattr(row, k) != v for k, v in requested.items())
    _apply_changes(
        session, row, requested, entity=entity, actor_user_id=actor_user_id, ip_address=ip_address
    )
    return changed


def update_bank(
    session: Session,
    *,
    bank_id: int,
    actor_user_id: int | None,
    name: str | None = None,
    is_active: bool | None = None,
    country_id: int | None = None,
    ip_address: str | None = None,
) -> BankView:
    """Change a bank's name, active flag or country. Audited; cache invalidated after commit."""
    row = session.get(Bank, bank_id, with_for_update=True)
    if row is None:
        raise NotFound("bank not found")
    _apply_changes(
        session,
        row,
        {"name": name, "is_active": is_active, "country_id": country_id},
        entity="bank",
        actor_user_id=actor_user_id,
        ip_address=ip_address,
    )
    fiats = _fiats_offering(session, AvailableBankMethod.bank_id, row.id)
    invalidate_after_commit(session, _bank_keys(row) + [_methods_key(f) for f in fiats])
    return _bank_view(row)


def update_payment_method(
    session: Session,
    *,
    payment_method_id: int,
    actor_user_id: int | None,
    name: str | None = None,
    is_active: bool | None = None,
    ip_address: str | None = None,
) -> PaymentMethodView:
    """Change a payment method's name or active flag. Audited; cache invalidated after commit."""
    row = session.get(PaymentMethod, payment_method_id, with_for_update=True)
    if row is None:
        raise NotFound("payment method not found")
    _apply_changes(
        session,
        row,
        {"name": name, "is_active": is_active},
        entity="payment_method",
        actor_user_id=actor_user_id,
        ip_address=ip_address,
    )
    fiats = _fiats_offering(session, AvailableBankMethod.payment_method_id, row.id)
    invalidate_after_commit(session, _method_keys(row) + [_methods_key(f) for f in fiats])
    return _method_view(row)


def set_bank_method_availability(
    session: Session,
    *,
    fiat_currency_id: int,
    bank_id: int,
    payment_method_id: int,
    is_active: bool,
    actor_user_id: int | None,
    ip_address: str | None = None,
) -> None:
    """Offer (or stop offering) a bank's method in a fiat. Audited; cache invalidated."""
    key = {
        "fiat_currency_id": fiat_currency_id,
        "bank_id": bank_id,
        "payment_method_id": payment_method_id,
    }
    row = lock_or_create(session, AvailableBankMethod, key, {"is_active": is_active})
    row.is_active = is_active
    session.flush()
    log_event(
        session,
        action="bank_method.availability",
        user_id=actor_user_id,
        target_entity="avalible_bank_methods",
        target_id=row.id,
        details={**key, "is_active": is_active},
        ip_address=ip_address,
    )
    invalidate_after_commit(session, [_methods_key(fiat_currency_id)])
