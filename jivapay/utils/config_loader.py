"""Run-time business settings: declared once here, stored in `configuration_settings`.

`runtime_settings(session)` returns every setting as one typed, frozen `RuntimeSettings` object, read
through the caller's session: the stored value converted to the declared type, or the default when
the row is missing or its value is invalid (logged as a warning, never raised). The object is cached
per process for a few seconds (one load at a time) so hot paths (intake, assignment) do not query on
every call; `standalone_runtime_settings()` is the one reader for callers with no session (the
rate-limit middleware, the rate refresh). `get_typed_config_value(key)` remains for old callers;
`set_config_value` invalidates this process's cache as soon as its transaction commits, and other
processes see the change within the cache lifetime.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.utils import atomic_transaction, transaction_flow
from jivapay.enums import ConfigValueType
from jivapay.utils.exceptions import ValidationFailed

log = structlog.get_logger(__name__)

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class SettingSpec:
    key: str
    value_type: ConfigValueType
    default: Any
    description: str
    # Inclusive bounds of a number (for a JSON list of seconds, of each entry): a value outside
    # would break the code that reads it (see `bounds_problem`).
    minimum: int | Decimal | None = None
    maximum: int | Decimal | None = None


def _s(
    key: str,
    value_type: ConfigValueType,
    default: Any,
    description: str,
    bounds: tuple[int | Decimal, int | Decimal] | None = None,
) -> SettingSpec:
    low, high = bounds if bounds is not None else (None, None)
    return SettingSpec(key, value_type, default, description, low, high)


_HOUR = 3600
_DAY = 24 * _HOUR
_DAY_MINUTES = 24 * 60
_MIB = 1024 * 1024
# A rate limit ("100/minute") allows at most this many requests in a window of at most a day: the
# limiter keeps each window's counters in Redis for twice its length, and an expiry beyond what
# Redis can hold ("1/1000000000000 year") makes every check a storage error (fail open).
RATE_LIMIT_MAX_AMOUNT = 1_000_000_000
RATE_LIMIT_MAX_WINDOW_SECONDS = _DAY
RETRY_SCHEDULE_MAX_ENTRIES = 100


_T = ConfigValueType
D = Decimal
SETTINGS: dict[str, SettingSpec] = {
    spec.key: spec
    for spec in (
        # Order processing. A retry waits at most a day (`order_processor.retry_delay`), and the
        # factor's power over every attempt stays far inside Decimal's range.
        _s("MAX_ORDER_RETRIES", _T.INT, 5, "Assignment attempts before an order fails.", (0, 1000)),
        _s(
            "RETRY_DELAY_SECONDS",
            _T.INT,
            10,
            "Delay before the first assignment retry.",
            (0, _DAY),
        ),
        _s(
            "RETRY_BACKOFF_FACTOR",
            _T.DECIMAL,
            D("2"),
            "Multiplier of the retry delay.",
            (D("1"), D("10")),
        ),
        _s(
            "STUCK_ORDER_SECONDS",
            _T.INT,
            120,
            "An order claimed this long ago is re-queued.",
            (1, _DAY),
        ),
        _s(
            "ASSIGNMENT_BATCH_SIZE",
            _T.INT,
            1,
            "Orders assigned per transaction when intake arrives in bursts (up to 20); above 1, "
            "faster with many traders, slower with a few: a batch keeps the requisites and "
            "deposits it took until it commits, and other workers wait for them.",
            (1, 20),
        ),
        # Order timeouts: at most a day, like a store's own `order_ttl_minutes`.
        _s(
            "PAYIN_PAYMENT_TIMEOUT_MINUTES",
            _T.INT,
            15,
            "Time the payer has to pay a PayIn.",
            (1, _DAY_MINUTES),
        ),
        _s(
            "TRADER_CONFIRM_TIMEOUT_MINUTES",
            _T.INT,
            30,
            "Time a trader has to confirm a paid order.",
            (1, _DAY_MINUTES),
        ),
        _s(
            "PAYOUT_TIMEOUT_MINUTES",
            _T.INT,
            60,
            "Time a trader has to send a PayOut.",
            (1, _DAY_MINUTES),
        ),
        _s(
            "EXCHANGE_RATE_MAX_AGE_SECONDS",
            _T.INT,
            86400,
            "Older rates make intake fail.",
            (1, 7 * _DAY),
        ),
        _s("EXCHANGE_RATE_SOURCE_URL", _T.STR, "", "HTTP source of rates; empty disables refresh."),
        _s(
            "RATE_REFRESH_INTERVAL_SECONDS",
            _T.INT,
            300,
            "Interval of the rate refresh.",
            (1, _DAY),
        ),
        _s(
            "RATE_REFRESH_TIMEOUT_SECONDS",
            _T.INT,
            10,
            "Timeout of one rate source request.",
            (1, 60),
        ),
        _s(
            "EXCHANGE_RATE_MAX_CHANGE_PERCENT",
            _T.DECIMAL,
            D("50"),
            "Larger jumps refused.",
            (D("0.01"), D("1000")),
        ),
        # Every intake writes a key; kept longer than a month they only grow the table.
        _s(
            "IDEMPOTENCY_KEY_TTL_HOURS",
            _T.INT,
            24,
            "How long gateway idempotency keys live.",
            (1, 30 * 24),
        ),
        # Rate limiting (the limit strings: RATE_LIMIT_MAX_AMOUNT, RATE_LIMIT_MAX_WINDOW_SECONDS)
        _s("RATE_LIMIT_DEFAULT", _T.STR, "600/minute", "Limit per principal, else per IP."),
        _s("RATE_LIMIT_GATEWAY", _T.STR, "6000/minute", "Limit per store on every gateway route."),
        _s("RATE_LIMIT_GATEWAY_INIT", _T.STR, "600/minute", "Limit per store on order intake."),
        _s(
            "RATE_LIMIT_LOGIN",
            _T.STR,
            "10/minute",
            "Login limit per IP, and per account on failures.",
        ),
        _s(
            "RATE_LIMIT_BLOCK_AFTER_VIOLATIONS",
            _T.INT,
            50,
            "Auth failures of an IP before a block.",
            (1, 1_000_000),
        ),
        _s(
            "RATE_LIMIT_BLOCK_WINDOW_SECONDS",
            _T.INT,
            600,
            "Window in which auth failures count.",
            (1, _DAY),
        ),
        _s(
            "RATE_LIMIT_BLOCK_SECONDS",
            _T.INT,
            900,
            "How long a failing unauthenticated IP is blocked.",
            (1, _DAY),
        ),
        # Callbacks (the contract: a 2xx within 10 s; waits up to 24 h) and documents
        # (a file is held in memory whole, up to 5 a request; 20 MiB is also a PDF stream's cap).
        _s(
            "CALLBACK_MAX_ATTEMPTS",
            _T.INT,
            10,
            "Delivery attempts before a callback fails.",
            (1, 100),
        ),
        _s(
            "CALLBACK_TIMEOUT_SECONDS",
            _T.INT,
            10,
            "Timeout of one callback request.",
            (1, 10),
        ),
        _s(
            "CALLBACK_RETRY_SCHEDULE_SECONDS",
            _T.JSON,
            None,
            "Waits between callback tries.",
            (1, _DAY),
        ),
        _s(
            "RECEIPT_MAX_BYTES",
            _T.INT,
            10 * _MIB,
            "Largest receipt upload accepted.",
            (1, 20 * _MIB),
        ),
        # Fraud (thresholds are fiat amounts; an empty threshold disables its rule)
        _s("FRAUD_CHECKS_ENABLED", _T.BOOL, True, "Master switch of the fraud checks."),
        _s(
            "FRAUD_MANUAL_REVIEW_THRESHOLD",
            _T.DECIMAL,
            None,
            "Amounts above go to review.",
            (D("0.01"), D("1e15")),
        ),
        _s(
            "FRAUD_DENY_THRESHOLD",
            _T.DECIMAL,
            None,
            "Amounts above are denied.",
            (D("0.01"), D("1e15")),
        ),
        _s("FRAUD_RULE_AMOUNT_ENABLED", _T.BOOL, True, "Amount threshold rule."),
        _s("FRAUD_RULE_BLOCKLIST_ENABLED", _T.BOOL, True, "Blocklist rule."),
        _s("FRAUD_RULE_VELOCITY_ENABLED", _T.BOOL, True, "Velocity rule."),
        # Velocity counters live in Redis for two windows.
        _s(
            "FRAUD_VELOCITY_WINDOW_SECONDS",
            _T.INT,
            3600,
            "Velocity counting window.",
            (1, _DAY),
        ),
        _s(
            "FRAUD_VELOCITY_MAX_PER_CUSTOMER",
            _T.INT,
            10,
            "Orders per customer id per window.",
            (1, 10_000_000),
        ),
        _s(
            "FRAUD_VELOCITY_MAX_PER_IP",
            _T.INT,
            20,
            "Orders per IP per window.",
            (1, 10_000_000),
        ),
        _s(
            "FRAUD_VELOCITY_MAX_PER_STORE",
            _T.INT,
            100000,
            "Orders per store per window.",
            (1, 10_000_000),
        ),
        _s("FRAUD_RULE_UNPAID_EXPIRED_ENABLED", _T.BOOL, True, "Card-harvesting rule."),
        _s(
            "FRAUD_UNPAID_EXPIRED_MAX",
            _T.INT,
            3,
            "Unpaid expired PayIns before review.",
            (1, 1000),
        ),
        _s(
            "FRAUD_UNPAID_EXPIRED_WINDOW_HOURS",
            _T.INT,
            24,
            "Window of the card-harvesting rule.",
            (1, 365 * 24),
        ),
    )
}


def _number_text(value: int | Decimal) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def bounds_problem(spec: SettingSpec, value: Any) -> str | None:
    """What is out of range in a typed, non-null `value` of `spec`, or None.

    Numbers lie within the spec's inclusive bounds; a rate limit allows 1 to
    `RATE_LIMIT_MAX_AMOUNT` requests per window of at most `RATE_LIMIT_MAX_WINDOW_SECONDS`; the
    callback retry schedule is a list of 1 to `RETRY_SCHEDULE_MAX_ENTRIES` integers within the
    bounds. One definition for the admin API, `set_config_value` and every read (an out-of-range
    stored value falls back to the default)."""
    low, high = spec.minimum, spec.maximum
    if spec.value_type in (ConfigValueType.INT, ConfigValueType.DECIMAL) and low is not None:
        assert high is not None
        if not low <= value <= high:
            return f"must be between {_number_text(low)} and {_number_text(high)}"
    if spec.value_type == ConfigValueType.STR and spec.key.startswith("RATE_LIMIT_"):
        from limits import parse_many

        try:
            items = parse_many(value)
        except ValueError as exc:
            return f'not a rate limit such as "100/minute" ({exc})'
        if not items or any(item.amount < 1 for item in items):
            return "a rate limit must allow at least one request"
        if any(item.amount > RATE_LIMIT_MAX_AMOUNT for item in items):
            return f"a rate limit allows at most {RATE_LIMIT_MAX_AMOUNT} requests per window"
        if any(item.get_expiry() > RATE_LIMIT_MAX_WINDOW_SECONDS for item in items):
            return "a rate limit's window must be at most a day"
    if spec.value_type == ConfigValueType.JSON and low is not None:
        assert high is not None
        if (
            not isinstance(value, list)
            or not 1 <= len(value) <= RETRY_SCHEDULE_MAX_ENTRIES
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
            or any(not low <= v <= high for v in value)
        ):
            return (
                f"must be a list of 1 to {RETRY_SCHEDULE_MAX_ENTRIES} integers (seconds), each "
                f"between {_number_text(low)} and {_number_text(high)}"
            )
    return None


# --------------------------------------------------------------------------- conversion


def _to_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _to_decimal(raw: str) -> Decimal:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal: {raw!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {raw!r}")
    return value


_PARSERS: dict[ConfigValueType, Callable[[str], Any]] = {
    ConfigValueType.INT: lambda raw: int(raw.strip()),
    ConfigValueType.FLOAT: lambda raw: float(raw.strip()),
    ConfigValueType.DECIMAL: _to_decimal,
    ConfigValueType.BOOL: _to_bool,
    ConfigValueType.STR: lambda raw: raw,
    ConfigValueType.JSON: json.loads,
}


def parse_value(spec: SettingSpec, raw: str | None) -> Any:
    """Convert a stored text to the declared type; an empty value means "unset" (None)."""
    if raw is None or raw == "":
        return None
    value = _PARSERS[spec.value_type](raw)
    if spec.key.startswith("RATE_LIMIT_") and spec.value_type == ConfigValueType.STR:
        from limits import parse_many

        parse_many(value)  # raises ValueError on a malformed limit string
    return value


def serialize_value(spec: SettingSpec, value: Any) -> str | None:
    if value is None:
        return None
    if spec.value_type == ConfigValueType.JSON:
        return json.dumps(value)
    if spec.value_type == ConfigValueType.BOOL:
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- the typed settings object


@dataclass(frozen=True)
class RuntimeSettings:
    """Every run-time setting at one moment, typed; fields are the keys of `SETTINGS`.

    A misspelt key is an attribute error that mypy reports; `tests/test_config.py` checks that the
    fields and their types match the declared table, so the two cannot drift apart.
    """

    MAX_ORDER_RETRIES: int
    RETRY_DELAY_SECONDS: int
    RETRY_BACKOFF_FACTOR: Decimal
    STUCK_ORDER_SECONDS: int
    ASSIGNMENT_BATCH_SIZE: int
    PAYIN_PAYMENT_TIMEOUT_MINUTES: int
    TRADER_CONFIRM_TIMEOUT_MINUTES: int
    PAYOUT_TIMEOUT_MINUTES: int
    EXCHANGE_RATE_MAX_AGE_SECONDS: int
    EXCHANGE_RATE_SOURCE_URL: str
    RATE_REFRESH_INTERVAL_SECONDS: int
    RATE_REFRESH_TIMEOUT_SECONDS: int
    EXCHANGE_RATE_MAX_CHANGE_PERCENT: Decimal
    IDEMPOTENCY_KEY_TTL_HOURS: int
    RATE_LIMIT_DEFAULT: str
    RATE_LIMIT_GATEWAY: str
    RATE_LIMIT_GATEWAY_INIT: str
    RATE_LIMIT_LOGIN: str
    RATE_LIMIT_BLOCK_AFTER_VIOLATIONS: int
    RATE_LIMIT_BLOCK_WINDOW_SECONDS: int
    RATE_LIMIT_BLOCK_SECONDS: int
    CALLBACK_MAX_ATTEMPTS: int
    CALLBACK_TIMEOUT_SECONDS: int
    CALLBACK_RETRY_SCHEDULE_SECONDS: Any
    RECEIPT_MAX_BYTES: int
    FRAUD_CHECKS_ENABLED: bool
    FRAUD_MANUAL_REVIEW_THRESHOLD: Decimal | None
    FRAUD_DENY_THRESHOLD: Decimal | None
    FRAUD_RULE_AMOUNT_ENABLED: bool
    FRAUD_RULE_BLOCKLIST_ENABLED: bool
    FRAUD_RULE_VELOCITY_ENABLED: bool
    FRAUD_VELOCITY_WINDOW_SECONDS: int
    FRAUD_VELOCITY_MAX_PER_CUSTOMER: int
    FRAUD_VELOCITY_MAX_PER_IP: int
    FRAUD_VELOCITY_MAX_PER_STORE: int
    FRAUD_RULE_UNPAID_EXPIRED_ENABLED: bool
    FRAUD_UNPAID_EXPIRED_MAX: int
    FRAUD_UNPAID_EXPIRED_WINDOW_HOURS: int


# --------------------------------------------------------------------------- cache

# One object for the process, replaced whole when it expires; loads are serialised so that a
# burst of requests after the expiry costs one query, not one per request.
_cache_lock = threading.Lock()
_load_lock = threading.Lock()
_cached: tuple[float, RuntimeSettings] | None = None


def invalidate_cache(key: str | None = None) -> None:
    """Forget the cached settings (`key` is accepted for callers that name one; all are dropped)."""
    global _cached
    with _cache_lock:
        _cached = None


def get_spec(key: str) -> SettingSpec:
    try:
        return SETTINGS[key]
    except KeyError as exc:
        raise ValidationFailed(f"unknown setting {key!r}") from exc


def _typed(spec: SettingSpec, raw: str | None, present: bool) -> Any:
    if not present:
        return spec.default
    try:
        value = parse_value(spec, raw)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        log.warning("invalid_setting_value", key=spec.key, value=raw, error=str(exc))
        return spec.default
    if value is None:
        return spec.default
    # A value stored before its bound existed (or written around the admin API) would break
    # its readers: the default serves instead, as for any invalid value.
    problem = bounds_problem(spec, value)
    if problem is not None:
        log.warning("invalid_setting_value", key=spec.key, value=raw, error=problem)
        return spec.default
    return value


def _load_all(session: Session) -> dict[str, Any]:
    """Every declared setting, typed, from one query (hot paths read several settings in a row)."""
    from jivapay.database.models import ConfigurationSetting

    rows = session.execute(select(ConfigurationSetting.key, ConfigurationSetting.value))
    stored = {key: value for key, value in rows}
    return {key: _typed(spec, stored.get(key), key in stored) for key, spec in SETTINGS.items()}


@transaction_flow
def load_settings_standalone() -> dict[str, Any]:
    """Every setting, typed, read in a short transaction of its own (for callers with no session)."""
    # Committed, not closed mid-transaction: a read-only commit is free, while the ROLLBACK of a
    # close would also drop the connection's prepared statements (psycopg).
    with atomic_transaction() as own:
        return _load_all(own)


def _fresh() -> RuntimeSettings | None:
    with _cache_lock:
        cached = _cached
    return cached[1] if cached is not None and cached[0] > time.monotonic() else None


def _current(load: Callable[[], dict[str, Any]]) -> RuntimeSettings:
    global _cached
    settings = _fresh()
    if settings is not None:
        return settings
    with _load_lock:
        settings = _fresh()  # loaded by another thread while this one waited
        if settings is None:
            settings = RuntimeSettings(**load())
            with _cache_lock:
                _cached = (time.monotonic() + CACHE_SECONDS, settings)
    return settings


def runtime_settings(session: Session) -> RuntimeSettings:
    """The run-time settings, read through the caller's session on a cache miss (cached briefly).

    Through the caller's session, so a caller holding row locks never waits for a second
    connection from the pool just to read a setting.
    """
    return _current(lambda: _load_all(session))


def standalone_runtime_settings() -> RuntimeSettings:
    """The run-time settings for a caller with no session (the rate-limit middleware, the rate
    refresh before its transaction): a cache miss reads them in a short transaction of its own."""
    return _current(load_settings_standalone)


def get_typed_config_value(key: str, session: Session | None = None) -> Any:
    """The current value of setting `key`, typed as declared (cached for a few seconds).

    Prefer `runtime_settings(session).KEY`: the attribute is checked by mypy. Without a session a
    cache miss opens its own connection; pass the caller's session when there is one.
    """
    get_spec(key)
    settings = runtime_settings(session) if session is not None else standalone_runtime_settings()
    return getattr(settings, key)


def set_config_value(
    session: Session, key: str, value: Any, *, actor_user_id: int | None = None
) -> Any:
    """Validate and store a setting (flushes; the caller commits). Returns the typed value."""
    from jivapay.database.models import ConfigurationSetting
    from jivapay.database.utils import call_after_commit

    spec = get_spec(key)
    raw = value if isinstance(value, str) or value is None else serialize_value(spec, value)
    try:
        typed = parse_value(spec, raw)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValidationFailed(f"invalid value for {key}: {exc}") from exc
    problem = None if typed is None else bounds_problem(spec, typed)
    if problem is not None:
        raise ValidationFailed(f"invalid value for {key}: {problem}", extra={"key": key})
    row = session.get(ConfigurationSetting, key)
    if row is None:
        row = ConfigurationSetting(
            key=key, value_type=spec.value_type.value, description=spec.description
        )
        session.add(row)
    row.value = serialize_value(spec, typed)
    row.updated_by_user_id = actor_user_id
    session.flush()
    invalidate_cache(key)
    call_after_commit(session, lambda: invalidate_cache(key), label=f"invalidate:{key}")
    return typed


def seed_defaults(session: Session) -> int:
    """Insert every declared setting that is missing, with its default; returns how many."""
    from jivapay.database.models import ConfigurationSetting

    existing = set(session.scalars(select(ConfigurationSetting.key)))
    added = 0
    for spec in SETTINGS.values():
        if spec.key in existing:
            continue
        session.add(
            ConfigurationSetting(
                key=spec.key,
                value=serialize_value(spec, spec.default),
                value_type=spec.value_type.value,
                description=spec.description,
            )
        )
        added += 1
    session.flush()
    return added
