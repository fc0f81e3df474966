"""Seeded reference data: countries, currencies, banks, payment methods, which bank offers which
method in which fiat, time zones and starting exchange rates.

Rows are matched by their natural key (code, name, or the pair/triple of codes) and only missing ones
are inserted: a rerun never duplicates a row and never overwrites what an admin edited, exchange
rates included. Seeded rates carry `source = seed` and age like any other rate, so intake refuses
them once `EXCHANGE_RATE_MAX_AGE_SECONDS` has passed unless an admin or the refresh task updates them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    AvailableBankMethod,
    Bank,
    Country,
    CryptoCurrency,
    ExchangeRate,
    FiatCurrency,
    PaymentMethod,
    TimeZone,
)
from jivapay.enums import RateSource

COUNTRIES = [
    ("RU", "Russia"),
    ("KZ", "Kazakhstan"),
    ("US", "United States"),
    ("UZ", "Uzbekistan"),
    ("KG", "Kyrgyzstan"),
    ("AM", "Armenia"),
    ("GE", "Georgia"),
    ("TR", "Turkey"),
    ("AE", "United Arab Emirates"),
]

# code, name, symbol, country code
FIAT_CURRENCIES = [
    ("RUB", "Russian ruble", "₽", "RU"),
    ("KZT", "Kazakhstani tenge", "₸", "KZ"),
    ("USD", "US dollar", "$", "US"),
]

# code, name, network
CRYPTO_CURRENCIES = [("USDT", "Tether USD", "TRC20")]

# code, name, country code
BANKS = [
    ("sberbank", "Sberbank", "RU"),
    ("tinkoff", "T-Bank (Tinkoff)", "RU"),
    ("alfabank", "Alfa-Bank", "RU"),
    ("vtb", "VTB", "RU"),
    ("raiffeisen", "Raiffeisenbank", "RU"),
    ("kaspi", "Kaspi Bank", "KZ"),
    ("halyk", "Halyk Bank", "KZ"),
    ("jusan", "Jusan Bank", "KZ"),
    ("chase", "JPMorgan Chase", "US"),
    ("bofa", "Bank of America", "US"),
    ("wellsfargo", "Wells Fargo", "US"),
]

PAYMENT_METHODS = [
    ("card", "Bank card transfer"),
    ("sbp", "SBP (Faster Payments System)"),
    ("account", "Bank account transfer"),
    ("kaspi_transfer", "Kaspi transfer"),
    ("zelle", "Zelle"),
]

# fiat code -> bank code -> method codes
BANK_METHODS: dict[str, dict[str, tuple[str, ...]]] = {
    "RUB": {
        "sberbank": ("card", "sbp", "account"),
        "tinkoff": ("card", "sbp", "account"),
        "alfabank": ("card", "sbp", "account"),
        "vtb": ("card", "sbp", "account"),
        "raiffeisen": ("card", "sbp", "account"),
    },
    "KZT": {
        "kaspi": ("card", "kaspi_transfer", "account"),
        "halyk": ("card", "account"),
        "jusan": ("card", "account"),
    },
    "USD": {
        "chase": ("card", "account", "zelle"),
        "bofa": ("card", "account", "zelle"),
        "wellsfargo": ("card", "account", "zelle"),
    },
}

# IANA name, UTC offset in minutes (standard time)
TIME_ZONES = [
    ("UTC", 0),
    ("Europe/London", 0),
    ("Europe/Kaliningrad", 120),
    ("Europe/Moscow", 180),
    ("Europe/Istanbul", 180),
    ("Europe/Samara", 240),
    ("Asia/Dubai", 240),
    ("Asia/Yekaterinburg", 300),
    ("Asia/Almaty", 300),
    ("Asia/Tashkent", 300),
    ("Asia/Bishkek", 360),
    ("Asia/Novosibirsk", 420),
    ("Asia/Vladivostok", 600),
    ("America/New_York", -300),
]

# crypto, fiat, buy, sell, median
EXCHANGE_RATES = [
    ("USDT", "RUB", Decimal("95.50"), Decimal("97.50"), Decimal("96.50")),
    ("USDT", "KZT", Decimal("505.00"), Decimal("515.00"), Decimal("510.00")),
    ("USDT", "USD", Decimal("0.998"), Decimal("1.002"), Decimal("1.00")),
]


def seed_reference(session: Session) -> dict[str, int]:
    """Insert the missing reference rows; returns how many were added per table."""
    created: dict[str, int] = {}
    created["countries"] = _insert_missing(
        session, Country, "code", [{"code": c, "name": n} for c, n in COUNTRIES]
    )
    countries = _ids(session, Country, "code")
    created["fiat_currencies"] = _insert_missing(
        session,
        FiatCurrency,
        "code",
        [
            {"code": c, "name": n, "symbol": s, "country_id": countries.get(cc)}
            for c, n, s, cc in FIAT_CURRENCIES
        ],
    )
    created["crypto_currencies"] = _insert_missing(
        session,
        CryptoCurrency,
        "code",
        [{"code": c, "name": n, "network": net} for c, n, net in CRYPTO_CURRENCIES],
    )
    created["banks"] = _insert_missing(
        session,
        Bank,
        "code",
        [{"code": c, "name": n, "country_id": countries.get(cc)} for c, n, cc in BANKS],
    )
    created["payment_methods"] = _insert_missing(
        session, PaymentMethod, "code", [{"code": c, "name": n} for c, n in PAYMENT_METHODS]
    )
    created["time_zones"] = _insert_missing(
        session, TimeZone, "name", [{"name": n, "utc_offset_minutes": o} for n, o in TIME_ZONES]
    )
    created["bank_methods"] = _seed_bank_methods(session)
    created["exchange_rates"] = _seed_rates(session)
    return created


def _ids(session: Session, model: type[Any], key: str) -> dict[str, int]:
    column = getattr(model, key)
    return {k: i for k, i in session.execute(select(column, model.id))}


def _insert_missing(
    session: Session, model: type[Any], key: str, rows: list[dict[str, Any]]
) -> int:
    existing = set(session.scalars(select(getattr(model, key))))
    added = 0
    for row in rows:
        if row[key] not in existing:
            session.add(model(**row))
            added += 1
    session.flush()
    return added


def _seed_bank_methods(session: Session) -> int:
    fiats = _ids(session, FiatCurrency, "code")
    banks = _ids(session, Bank, "code")
    methods = _ids(session, PaymentMethod, "code")
    stmt = select(
        AvailableBankMethod.fiat_currency_id,
        AvailableBankMethod.bank_id,
        AvailableBankMethod.payment_method_id,
    )
    existing = {(f, b, m) for f, b, m in session.execute(stmt)}
    added = 0
    for fiat, by_bank in BANK_METHODS.items():
        for bank, method_codes in by_bank.items():
            for method in method_codes:
                fiat_id, bank_id, method_id = fiats.get(fiat), banks.get(bank), methods.get(method)
                if fiat_id is None or bank_id is None or method_id is None:
                    continue
                key = (fiat_id, bank_id, method_id)
                if key in existing:
                    continue
                session.add(
                    AvailableBankMethod(
                        fiat_currency_id=fiat_id, bank_id=bank_id, payment_method_id=method_id
                    )
                )
                existing.add(key)
                added += 1
    session.flush()
    return added


def _seed_rates(session: Session) -> int:
    cryptos = _ids(session, CryptoCurrency, "code")
    fiats = _ids(session, FiatCurrency, "code")
    stmt = select(ExchangeRate.crypto_currency_id, ExchangeRate.fiat_currency_id)
    existing = {(c, f) for c, f in session.execute(stmt)}
    added = 0
    for crypto, fiat, buy, sell, median in EXCHANGE_RATES:
        crypto_id, fiat_id = cryptos.get(crypto), fiats.get(fiat)
        if crypto_id is None or fiat_id is None:
            continue
        pair = (crypto_id, fiat_id)
        if pair in existing:
            continue
        session.add(
            ExchangeRate(
                crypto_currency_id=pair[0],
                fiat_currency_id=pair[1],
                buy_rate=buy,
                sell_rate=sell,
                median_rate=median,
                source=RateSource.SEED.value,
            )
        )
        added += 1
    session.flush()
    return added
