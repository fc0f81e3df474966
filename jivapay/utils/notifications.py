"""Error reporting: Sentry set up from `SENTRY_DSN` in every process, with secrets scrubbed.

`report_critical_error` is safe to call anywhere: it logs, forwards to Sentry when configured, and
never raises. The scrubber removes card numbers, keys, secrets and passwords from every event, so a
report can carry whatever context helps without leaking what must stay secret.
"""

from __future__ import annotations

import re
from typing import Any

import structlog

from jivapay.config import get_settings

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
CARD_NUMBER_RE = re.compile(r"(?<!\w)(?<!\d\.)(?:\d[ -]?){8,15}(\d{4})(?!\w|\.\d)")
FILTERED = "[Filtered]"

_initialised = False


def mask_card_numbers(text: str) -> str:
    """Replace every card-like number in `text` by its last four digits."""
    return CARD_NUMBER_RE.sub(lambda m: f"****{m.group(1)}", text)


def _is_sensitive_key(key: object) -> bool:
    return (
        isinstance(key, str) and bool(SENSITIVE_KEY_RE.search(key)) and not SAFE_KEY_RE.search(key)
    )


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


def init_sentry(process: str) -> bool:
    """Initialise Sentry for this process when `SENTRY_DSN` is set; returns whether it is on."""
    global _initialised
    settings = get_settings()
    if not settings.SENTRY_DSN or _initialised:
        return _initialised
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.SENTRY_DSN,
        environment=settings.ENVIRONMENT.value,
        traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
        send_default_pii=False,
        before_send=scrub_event,  # type: ignore[arg-type]
        before_send_transaction=scrub_event,  # type: ignore[arg-type]
        server_name=process,
    )
    _initialised = True
    return True


def report_critical_error(
    exc: BaseException | None, context_message: str = "", **context: Any
) -> None:
    """Log and report an error with context; never raises."""
    try:
        safe = scrub(context)
        log.error(
            "critical_error",
            message=mask_card_numbers(context_message),
            error_type=type(exc).__name__ if exc else None,
            error=mask_card_numbers(str(exc)) if exc else None,
            **safe,
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
