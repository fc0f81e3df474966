"""Error reporting: Sentry set up from `SENTRY_DSN` in every process, with secrets scrubbed.

`report_critical_error` is safe to call anywhere: it logs, forwards to Sentry when configured,
records a `critical` audit row (`GET /admin/logs/critical-errors`), and never raises. The scrubber removes card numbers, keys, secrets and passwords from every event, so a
report can carry whatever context helps without leaking what must stay secret.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import structlog

from jivapay.config import get_settings
from jivapay.database.utils import transaction_flow

log = structlog.get_logger(__name__)

SENSITIVE_KEY_RE = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|private|authorization|signature|cookie|req_number|"
    r"beneficiary_number|card|(?:^|[_-])pan(?:$|[_-])|cvv|dsn)",
    re.IGNORECASE,
)
# Last four digits are what the product displays anyway; keeping them makes reports useful.
SAFE_KEY_RE = re.compile(r"last_?4$", re.IGNORECASE)
# 12-19 digits, optionally grouped by spaces or dashes: card and account numbers.
# Not inside a longer token (hex ids, decimals): no letter, digit or "digit." right before or after.
CARD_NUMBER_RE = re.compile(r"(?<!\w)(?<!\d\.)(?:\d[ -]?){8,26}(\d{4})(?!\w|\.\d)")
FILTERED = "[Filtered]"

_initialised = False


def mask_card_numbers(text: str) -> str:
    """Replace every card-like number in `text` by its last four digits."""
    return CARD_NUMBER_RE.sub(lambda m: f"****{m.group(1)}", text)


def url_without_secrets(url: str) -> str:
    """`url` without its user info and query string, which may carry credentials (a rate
    provider's API key); a dropped query shows as `?[Filtered]`."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    query = f"?{FILTERED}" if parts.query else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}{query}"


def _is_sensitive_key(key: object) -> bool:
    return isinstance(key, str) and _is_sensitive_name(key)


# Every log line and report scrubs its keys, and they come from a small set of names.
@functools.lru_cache(maxsize=4096)
def _is_sensitive_name(key: str) -> bool:
    return bool(SENSITIVE_KEY_RE.search(key)) and not SAFE_KEY_RE.search(key)


def scrub(value: Any, _depth: int = 0) -> Any:
    """A copy of `value` with sensitive keys filtered and card numbers masked, at any depth."""
    if _depth > 12:
        return value
    if isinstance(value, dict):
        return {
            k: FILTERED if _is_sensitive_key(k) and v not in (None, "") else scrub(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, _depth + 1) for v in value)
    if isinstance(value, str):
        return mask_card_numbers(value)
    return value


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry `before_send`: scrub the whole event."""
    cleaned: dict[str, Any] = scrub(event)
    return cleaned


def sentry_options(process: str) -> dict[str, Any]:
    """The options every process gives `sentry_sdk.init`."""
    settings = get_settings()
    return {
        "dsn": settings.SENTRY_DSN,
        "environment": settings.ENVIRONMENT.value,
        "traces_sample_rate": settings.SENTRY_TRACES_SAMPLE_RATE,
        "send_default_pii": False,
        # A frame's local variables arrive as reprs, which no key-based scrubbing can read into:
        # a `Settings` carries the signing and encryption keys, a claimed delivery its callback
        # secret. The stack trace and the message say where and what; the values stay here.
        "include_local_variables": False,
        "before_send": scrub_event,
        "before_send_transaction": scrub_event,
        "server_name": process,
    }


def init_sentry(process: str) -> bool:
    """Initialise Sentry for this process when `SENTRY_DSN` is set; returns whether it is on."""
    global _initialised
    if not get_settings().SENTRY_DSN or _initialised:
        return _initialised
    import sentry_sdk

    sentry_sdk.init(**sentry_options(process))
    _initialised = True
    return True


# At most this many critical audit rows per process per window: an error storm (the database
# flapping, a bad deploy) must not flood `audit_logs`; the log line and Sentry still get every one.
CRITICAL_AUDIT_MAX_PER_WINDOW = 20
CRITICAL_AUDIT_WINDOW_SECONDS = 60.0
_critical_lock = threading.Lock()
_critical_times: deque[float] = deque()
_critical_suppressed = 0
_in_report = threading.local()
# After a failed write the database is not tried again for a while: a caller reporting errors while
# the database hangs must not wait for a connection timeout each time.
CRITICAL_AUDIT_BACKOFF_SECONDS = 30.0
_critical_db_retry_at = 0.0


def _critical_audit_slot() -> int | None:
    """Take a slot of the per-process window: None when full, else how many were suppressed."""
    global _critical_suppressed
    now = time.monotonic()
    with _critical_lock:
        while _critical_times and _critical_times[0] <= now - CRITICAL_AUDIT_WINDOW_SECONDS:
            _critical_times.popleft()
        if len(_critical_times) >= CRITICAL_AUDIT_MAX_PER_WINDOW:
            _critical_suppressed += 1
            return None
        _critical_times.append(now)
        suppressed, _critical_suppressed = _critical_suppressed, 0
        return suppressed


def reset_critical_audit_limit() -> None:
    """Forget the window (tests)."""
    global _critical_suppressed, _critical_db_retry_at
    with _critical_lock:
        _critical_times.clear()
        _critical_suppressed = 0
        _critical_db_retry_at = 0.0


@transaction_flow
def _record_critical_audit(details: dict[str, Any]) -> None:
    """Write one `critical` audit row in its OWN short transaction.

    One of the few allowed separate transactions: the failing caller's transaction is usually
    about to roll back, and the record must survive it. Rate-limited per process, never raises,
    and never re-entered (a failure while recording is only logged).
    """
    global _critical_db_retry_at
    if getattr(_in_report, "active", False) or time.monotonic() < _critical_db_retry_at:
        return
    suppressed = _critical_audit_slot()
    if suppressed is None:
        return
    _in_report.active = True
    try:
        from jivapay.database.models import AuditLog
        from jivapay.database.utils import atomic_transaction
        from jivapay.enums import AuditLevel

        if suppressed:
            details = {**details, "suppressed_before": suppressed}
        # `details` is already scrubbed and JSON-safe (see report_critical_error).
        with atomic_transaction() as session:
            session.add(
                AuditLog(
                    action="system.critical_error",
                    target_entity="system",
                    details=details,
                    level=AuditLevel.CRITICAL.value,
                )
            )
    except Exception as exc:
        _critical_db_retry_at = time.monotonic() + CRITICAL_AUDIT_BACKOFF_SECONDS
        log.warning("critical_audit_failed", error=mask_card_numbers(repr(exc)))
    finally:
        _in_report.active = False


def report_critical_error(
    exc: BaseException | None, context_message: str = "", **context: Any
) -> None:
    """Log and report an error with context, and record it as a critical audit row; never raises."""
    try:
        safe = scrub(context)
        message = mask_card_numbers(context_message)
        error = mask_card_numbers(str(exc))[:2000] if exc else None
        log.error(
            "critical_error",
            message=message,
            error_type=type(exc).__name__ if exc else None,
            error=error,
            **safe,
        )
        _record_critical_audit(
            {
                "message": message[:2000],
                "error_type": type(exc).__name__ if exc else None,
                "error": error,
                "context": _json_safe(safe),
            }
        )
        if not _initialised:
            return
        import sentry_sdk

        with sentry_sdk.new_scope() as scope:
            scope.set_context("jivapay", {"message": context_message, **safe})
            if exc is not None:
                sentry_sdk.capture_exception(exc)
            else:
                sentry_sdk.capture_message(context_message, level="error")
    except Exception:  # noqa: S110 - reporting must never break the caller
        pass


def _json_safe(value: Any) -> Any:
    # JSONB holds no Decimal, datetime or enum: their text form is exact and readable.
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def notify_alert(message: str, **context: Any) -> None:
    """Raise an operator alert (warning level: logged, and a Sentry message); never raises."""
    try:
        safe = scrub(context)
        log.warning("alert", message=mask_card_numbers(message), **safe)
        if not _initialised:
            return
        import sentry_sdk

        with sentry_sdk.new_scope() as scope:
            scope.set_context("jivapay", {"message": message, **safe})
            sentry_sdk.capture_message(mask_card_numbers(message), level="warning")
    except Exception:  # noqa: S110 - alerting must never break the caller
        pass
