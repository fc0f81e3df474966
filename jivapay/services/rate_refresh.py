"""The scheduled exchange-rate refresh from a configurable HTTP source (docs/money.md).

`refresh_if_due` (the `reference.refresh_rates` beat task, every 15 s) runs `refresh_rates` at most
once per `RATE_REFRESH_INTERVAL_SECONDS` (a Redis `SET NX EX` gate, so the interval is a run-time
setting and two beats never double the rate; with Redis down it runs anyway: a refresh is
idempotent). `EXCHANGE_RATE_SOURCE_URL` empty disables it.

`refresh_rates` fetches the source with httpx (timeout `RATE_REFRESH_TIMEOUT_SECONDS`, no
redirects) outside any transaction, parses numbers as Decimal (`parse_float=Decimal`: no float
ever touches a rate), then upserts the good pairs with `source = http` in one transaction and
invalidates their cache entries after commit. Expected body:

    {"rates": [{"crypto": "USDT", "fiat": "RUB", "buy": "91.50", "sell": "92.30",
                "median": "91.90"}]}

(`median` optional: the midpoint of buy and sell; numbers as JSON strings or numbers). Pairs the
source does not mention keep their rate. A failing source (network error, timeout, non-200, body
that is not that shape) changes nothing and raises an alert; an entry that is not a positive rate
within NUMERIC(20, 8), has a median outside [buy, sell] (the rule of a manual rate too:
`reference_data.check_median`), names an unknown currency, or moves the median by more than
`EXCHANGE_RATE_MAX_CHANGE_PERCENT` is rejected alone (alert), the others still apply. The jump is
measured from the pair's row under its lock (`reference_data.upsert_rate`), so a manual rate
committed while the refresh runs is the one compared. A rate is never zeroed or deleted here: when
the source stays down, rates age until intake refuses them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import CryptoCurrency, FiatCurrency
from jivapay.database.utils import atomic_transaction, transaction_flow
from jivapay.enums import RateRefreshStatus, RateSource
from jivapay.services import reference_data
from jivapay.services.audit_logger import log_event
from jivapay.utils.config_loader import runtime_settings, standalone_runtime_settings
from jivapay.utils.exceptions import JivaPayException, ValidationFailed
from jivapay.utils.notifications import notify_alert, url_without_secrets
from jivapay.utils.redis_client import REDIS_ERRORS, get_redis, namespace

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class RateSourceError(Exception):
    """The source could not be read or its body is not a rate document."""


@dataclass(frozen=True)
class SourceRate:
    crypto: str
    fiat: str
    buy: Decimal
    sell: Decimal
    median: Decimal

    @property
    def pair(self) -> str:
        return f"{self.crypto}/{self.fiat}"


@dataclass(frozen=True)
class RefreshResult:
    """`status`: disabled, skipped (not due), ok (source read; see updated/rejected) or failed."""

    status: RateRefreshStatus
    updated: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    error: str | None = None


# --------------------------------------------------------------------------- source


def _entry(item: Any) -> SourceRate:
    if not isinstance(item, dict):
        raise ValueError("entry is not an object")
    crypto, fiat = item.get("crypto"), item.get("fiat")
    if not isinstance(crypto, str) or not isinstance(fiat, str) or not crypto or not fiat:
        raise ValueError("crypto and fiat must be currency codes")
    buy = reference_data.parse_rate(item.get("buy"), field="buy")
    sell = reference_data.parse_rate(item.get("sell"), field="sell")
    raw_median = item.get("median")
    median = (
        reference_data.median_of(buy, sell)
        if raw_median is None
        else reference_data.parse_rate(raw_median, field="median")
    )
    reference_data.check_median(buy, sell, median)
    return SourceRate(crypto.strip().upper(), fiat.strip().upper(), buy, sell, median)


def parse_source(body: bytes) -> tuple[list[SourceRate], list[str]]:
    """The good entries of a source body and the reasons the others were rejected."""
    try:
        document = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RateSourceError(f"body is not JSON: {exc}") from exc
    items = document.get("rates") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise RateSourceError('body has no "rates" list')
    good: list[SourceRate] = []
    rejected: list[str] = []
    for index, item in enumerate(items):
        try:
            good.append(_entry(item))
        except (ValueError, JivaPayException) as exc:
            label = item.get("crypto", "?") if isinstance(item, dict) else "?"
            other = item.get("fiat", "?") if isinstance(item, dict) else "?"
            rejected.append(f"#{index} {label}/{other}: {getattr(exc, 'message', exc)}")
    return good, rejected


def fetch_source(url: str, *, timeout: float) -> tuple[list[SourceRate], list[str]]:
    """GET the source and parse it; `RateSourceError` on any failure."""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise RateSourceError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise RateSourceError(f"HTTP {response.status_code}")
    if len(response.content) > MAX_BODY_BYTES:
        raise RateSourceError("body too large")
    return parse_source(response.content)


# --------------------------------------------------------------------------- apply


def apply_rates(
    session: Session, *, rates: list[SourceRate], now: datetime
) -> tuple[list[str], list[str]]:
    """Upsert the source's rates (`source = http`); returns (updated pairs, rejected reasons)."""
    max_change = runtime_settings(session).EXCHANGE_RATE_MAX_CHANGE_PERCENT
    cryptos = {
        code: id_ for code, id_ in session.execute(select(CryptoCurrency.code, CryptoCurrency.id))
    }
    fiats = {code: id_ for code, id_ in session.execute(select(FiatCurrency.code, FiatCurrency.id))}
    updated: list[str] = []
    rejected: list[str] = []
    for rate in rates:
        crypto_id, fiat_id = cryptos.get(rate.crypto), fiats.get(rate.fiat)
        if crypto_id is None or fiat_id is None:
            rejected.append(f"{rate.pair}: unknown currency")
            continue
        try:
            # The jump guard is checked on the locked row (a manual rate may land meanwhile).
            reference_data.upsert_rate(
                session,
                crypto_currency_id=crypto_id,
                fiat_currency_id=fiat_id,
                buy=rate.buy,
                sell=rate.sell,
                median=rate.median,
                source=RateSource.HTTP,
                now=now,
                max_change_percent=max_change,
            )
        except ValidationFailed as exc:
            rejected.append(f"{rate.pair}: {exc.message}")
            continue
        updated.append(rate.pair)
    if updated or rejected:
        log_event(
            session,
            action="exchange_rate.refresh",
            target_entity="exchange_rate",
            details={"updated": updated, "rejected": rejected},
        )
    return updated, rejected


@transaction_flow
def refresh_rates(*, url: str | None = None, now: datetime | None = None) -> RefreshResult:
    """Fetch the source and apply it (owns its transaction); alerts on any failure."""
    settings = standalone_runtime_settings()  # no transaction is open yet
    source = url if url is not None else settings.EXCHANGE_RATE_SOURCE_URL
    source = (source or "").strip()
    if not source:
        return RefreshResult(RateRefreshStatus.DISABLED)
    timeout = float(settings.RATE_REFRESH_TIMEOUT_SECONDS or 10)
    try:
        rates, rejected = fetch_source(source, timeout=timeout)
    except RateSourceError as exc:
        notify_alert(
            "exchange rate source failed; rates kept",
            source=url_without_secrets(source),
            error=str(exc),
        )
        return RefreshResult(RateRefreshStatus.FAILED, error=str(exc))
    with atomic_transaction() as session:
        updated, refused = apply_rates(session, rates=rates, now=now or utcnow())
    rejected = rejected + refused
    if rejected:
        notify_alert(
            "exchange rate source sent rejected rates",
            source=url_without_secrets(source),
            rejected=rejected,
        )
    log.info("exchange_rates_refreshed", updated=updated, rejected=len(rejected))
    return RefreshResult(RateRefreshStatus.OK, updated=tuple(updated), rejected=tuple(rejected))


def _gate_key() -> str:
    return f"{namespace()}:rate-refresh:gate"


def refresh_if_due(*, now: datetime | None = None) -> RefreshResult:
    """Run `refresh_rates` unless it ran less than `RATE_REFRESH_INTERVAL_SECONDS` ago."""
    settings = standalone_runtime_settings()
    if not (settings.EXCHANGE_RATE_SOURCE_URL or "").strip():
        return RefreshResult(RateRefreshStatus.DISABLED)
    interval = max(1, settings.RATE_REFRESH_INTERVAL_SECONDS or 300)
    try:
        due = get_redis(reference_data.REDIS_URL_OVERRIDE).set(
            _gate_key(), utcnow().isoformat(), nx=True, ex=interval
        )
    except REDIS_ERRORS as exc:
        log.warning("rate_refresh_gate_unavailable", error=repr(exc))
        due = True
    if not due:
        return RefreshResult(RateRefreshStatus.SKIPPED)
    return refresh_rates(now=now)
