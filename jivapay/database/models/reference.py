"""Reference data: countries, currencies, banks, payment methods and their availability, time
zones, exchange rates."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from jivapay.database.base import RATE, Base, IntPK, enum_check, utcnow
from jivapay.enums import RateSource


class Country(Base):
    __tablename__ = "countries"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(String(2), unique=True)
    name: Mapped[str] = mapped_column(String(100))


class FiatCurrency(Base):
    __tablename__ = "fiat_currencies"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(String(10), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    symbol: Mapped[str | None] = mapped_column(String(8))
    country_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("countries.id"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class CryptoCurrency(Base):
    __tablename__ = "crypto_currencies"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(String(10), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    network: Mapped[str | None] = mapped_column(String(32))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class Bank(Base):
    __tablename__ = "banks"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("countries.id"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class PaymentMethod(Base):
    __tablename__ = "payment_methods"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class AvailableBankMethod(Base):
    """Which bank offers which payment method in which fiat (the plan spells it `avalible`)."""

    __tablename__ = "avalible_bank_methods"
    __table_args__ = (UniqueConstraint("fiat_currency_id", "bank_id", "payment_method_id"),)

    id: Mapped[IntPK]
    fiat_currency_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("fiat_currencies.id", ondelete="CASCADE")
    )
    bank_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("banks.id", ondelete="CASCADE"))
    payment_method_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("payment_methods.id", ondelete="CASCADE")
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class TimeZone(Base):
    """A zone a trader may pick. `name` is an IANA name (known to Python's zoneinfo and to
    PostgreSQL) and alone decides the trader-local day of the daily limits, daylight saving time
    included (`services.trader_day`). `utc_offset_minutes` is only the standard offset shown
    next to the name: the day boundary never reads it."""

    __tablename__ = "time_zones"

    id: Mapped[IntPK]
    name: Mapped[str] = mapped_column(String(64), unique=True)
    utc_offset_minutes: Mapped[int] = mapped_column(Integer)


class ExchangeRate(Base):
    """One row per (crypto, fiat) pair; orders fix `median_rate` at intake."""

    __tablename__ = "exchange_rates"
    __table_args__ = (
        UniqueConstraint("crypto_currency_id", "fiat_currency_id"),
        CheckConstraint(
            "buy_rate > 0 AND sell_rate > 0 AND median_rate > 0", name="rates_positive"
        ),
        enum_check("source", RateSource),
    )

    id: Mapped[IntPK]
    crypto_currency_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("crypto_currencies.id", ondelete="CASCADE")
    )
    fiat_currency_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("fiat_currencies.id", ondelete="CASCADE")
    )
    buy_rate: Mapped[Decimal] = mapped_column(RATE)
    sell_rate: Mapped[Decimal] = mapped_column(RATE)
    median_rate: Mapped[Decimal] = mapped_column(RATE)
    source: Mapped[str] = mapped_column(String(16), default=RateSource.MANUAL.value)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=text("now()")
    )
