"""Administration of the run-time settings declared in `utils/config_loader.py`: listing them with
their current value, typed validation of a new value, and returning a key to its default.

A value is validated by the key's declared type, strictly (JSON types, no coercion): an integer is a
JSON integer, a decimal a decimal string (or an integer), a boolean `true`/`false`, a rate limit a
`limits` string such as "100/minute", JSON any JSON. Every number has inclusive bounds declared with
its key (`SettingSpec.minimum`/`maximum`, checked by `config_loader.bounds_problem`): they refuse
values that would break the platform (a zero timeout, a backoff factor below 1, a TTL whose
`now - timedelta(...)` overflows, a batch that holds every requisite); a rate limit's window is at
most a day, a URL is http(s). The 422 names the bounds. Keys whose default
is "unset" accept `null`. Changes go through `config_loader.set_config_value` (so every process
sees them within its cache time) and are audited with the old and new values.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import ConfigurationSetting
from jivapay.enums import ConfigValueType
from jivapay.schemas.admin import SettingChanged, SettingRead
from jivapay.services.audit_logger import log_event
from jivapay.utils import config_loader
from jivapay.utils.config_loader import SETTINGS, SettingSpec
from jivapay.utils.exceptions import NotFound, ValidationFailed
from jivapay.utils.notifications import url_without_secrets

_DECIMAL_TEXT = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_MAX_TEXT = 2000


def _spec(key: str) -> SettingSpec:
    spec = SETTINGS.get(key)
    if spec is None:
        raise NotFound(f"unknown setting {key!r}", code="setting_not_found")
    return spec


def _bad(key: str, problem: str) -> ValidationFailed:
    return ValidationFailed(f"invalid value for {key}: {problem}", extra={"key": key})


def _check_int(spec: SettingSpec, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(spec.key, "must be a JSON integer")
    return value


def _check_decimal(spec: SettingSpec, value: Any) -> Decimal:
    if isinstance(value, (bool, float)):
        raise _bad(spec.key, 'must be a decimal string such as "2.5", not a float')
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str) and value.isascii() and _DECIMAL_TEXT.match(value):
        try:
            number = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the pattern rules it out
            raise _bad(spec.key, "not a decimal") from exc
    else:
        raise _bad(spec.key, 'must be a non-negative decimal string such as "2.5"')
    return number


def _check_bool(spec: SettingSpec, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(spec.key, "must be true or false")
    return value


def _check_str(spec: SettingSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(spec.key, "must be a string")
    if len(value) > _MAX_TEXT:
        raise _bad(spec.key, f"must be at most {_MAX_TEXT} characters")
    if spec.key.endswith("_URL") and value:
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # "http://[::1", "http://[zz]/": urllib refuses the host
            valid = False
        if not valid:
            raise _bad(spec.key, "must be an http(s) URL or empty")
    return value


def _check_json(spec: SettingSpec, value: Any) -> Any:
    try:
        text = json.dumps(value)
    except TypeError:  # a JSON number with a fraction arrives as an exact Decimal
        raise _bad(spec.key, "numbers with a fraction are not supported here") from None
    if len(text) > _MAX_TEXT:
        raise _bad(spec.key, "is too large")
    return value


_CHECKS = {
    ConfigValueType.INT: _check_int,
    ConfigValueType.DECIMAL: _check_decimal,
    ConfigValueType.BOOL: _check_bool,
    ConfigValueType.STR: _check_str,
    ConfigValueType.JSON: _check_json,
}


def validate_value(key: str, value: Any) -> Any:
    """The typed value for `key`, or `ValidationFailed` naming the problem (`NotFound` if unknown)."""
    spec = _spec(key)
    if value is None:
        if spec.default is not None:
            raise _bad(key, "this setting cannot be unset (DELETE returns it to its default)")
        return None
    check = _CHECKS.get(spec.value_type)
    if check is None:  # pragma: no cover - every declared type has a check
        raise _bad(key, f"unsupported type {spec.value_type}")
    typed = check(spec, value)
    problem = config_loader.bounds_problem(spec, typed)
    if problem is not None:
        raise _bad(key, problem)
    return typed


def _json_value(spec: SettingSpec, value: Any) -> Any:
    # Decimals leave as strings, never floats.
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _read(spec: SettingSpec, row: ConfigurationSetting | None) -> SettingRead:
    present = row is not None
    current = config_loader._typed(spec, row.value if row else None, present)
    return SettingRead(
        key=spec.key,
        value_type=spec.value_type.value,
        value=_json_value(spec, current),
        default=_json_value(spec, spec.default),
        minimum=_json_value(spec, spec.minimum),
        maximum=_json_value(spec, spec.maximum),
        is_default=current == spec.default,
        description=spec.description,
        updated_at=row.updated_at if row else None,
        updated_by_user_id=row.updated_by_user_id if row else None,
    )


def list_settings(session: Session) -> list[SettingRead]:
    """Every declared setting with type, default, current value, description and last change."""
    rows = {row.key: row for row in session.scalars(select(ConfigurationSetting))}
    return [_read(spec, rows.get(key)) for key, spec in sorted(SETTINGS.items())]


def _audited(spec: SettingSpec, value: Any) -> Any:
    # A URL's query may carry a provider's API key: the audit log, readable with its own grant,
    # keeps where the setting pointed, not the key.
    if spec.key.endswith("_URL") and isinstance(value, str) and value:
        return url_without_secrets(value)
    return value


def _store(
    session: Session,
    spec: SettingSpec,
    typed: Any,
    *,
    actor_user_id: int,
    action: str,
    ip_address: str | None,
) -> SettingChanged:
    row = session.get(ConfigurationSetting, spec.key, with_for_update=True)
    before = _read(spec, row)
    old_raw = row.value if row is not None else None
    new_raw = config_loader.serialize_value(spec, typed)
    if row is not None and old_raw == new_raw:
        return SettingChanged(setting=before, changed=False)
    config_loader.set_config_value(session, spec.key, new_raw, actor_user_id=actor_user_id)
    row = session.get(ConfigurationSetting, spec.key)
    after = _read(spec, row)
    log_event(
        session,
        action=action,
        user_id=actor_user_id,
        target_entity="setting",
        target_id=spec.key,
        details={"old": _audited(spec, before.value), "new": _audited(spec, after.value)},
        ip_address=ip_address,
    )
    return SettingChanged(setting=after, changed=True)


def update_setting(
    session: Session, *, key: str, value: Any, actor_user_id: int, ip_address: str | None = None
) -> SettingChanged:
    """Validate and store a new value for `key`; audited with the old and new values."""
    spec = _spec(key)
    typed = validate_value(key, value)
    return _store(
        session,
        spec,
        typed,
        actor_user_id=actor_user_id,
        action="setting.updated",
        ip_address=ip_address,
    )


def reset_setting(
    session: Session, *, key: str, actor_user_id: int, ip_address: str | None = None
) -> SettingChanged:
    """Return `key` to its declared default; audited."""
    spec = _spec(key)
    return _store(
        session,
        spec,
        spec.default,
        actor_user_id=actor_user_id,
        action="setting.reset",
        ip_address=ip_address,
    )
