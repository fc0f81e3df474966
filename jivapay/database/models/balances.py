"""Balances and their history: store balances, trader deposits (crypto), trader fiat turnover, and
the platform's profit account.

Every change to a balance writes a history row in the same transaction (`amount` is the change
of `balance`, `frozen_delta` the change of `frozen`, so each is the sum of its history); the unique key on
(account, incoming order, operation) makes a repeated completion fail instead of paying twice.
Orders are referenced by their intake id (every order has one, even a PayOut frozen at intake before
it is assigned) and, once assigned, by `order_id` too.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from jivapay.database.base import CRYPTO, FIAT, Base, CreatedAt, IntPK, UpdatedAt, enum_check
from jivapay.enums import BalanceOperation

_FROZEN_WITHIN_BALANCE = "frozen >= 0 AND frozen <= balance"


class BalanceStore(Base):
    __tablename__ = "balance_stores"
    __table_args__ = (
        UniqueConstraint("store_id", "crypto_currency_id"),
        CheckConstraint(_FROZEN_WITHIN_BALANCE, name="frozen_within_balance"),
    )

    id: Mapped[IntPK]
    store_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("merchant_stores.id", ondelete="RESTRICT")
    )
    crypto_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("crypto_currencies.id"))
    balance: Mapped[Decimal] = mapped_column(CRYPTO, default=Decimal("0"), server_default="0")
    frozen: Mapped[Decimal] = mapped_column(CRYPTO, default=Decimal("0"), server_default="0")
    updated_at: Mapped[UpdatedAt]


class BalanceTrader(Base):
    """A trader's crypto deposit."""

    __tablename__ = "balance_traders"
    __table_args__ = (
        UniqueConstraint("trader_id", "crypto_currency_id"),
        CheckConstraint(_FROZEN_WITHIN_BALANCE, name="frozen_within_balance"),
    )

    id: Mapped[IntPK]
    trader_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("traders.id", ondelete="RESTRICT")
    )
    crypto_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("crypto_currencies.id"))
    balance: Mapped[Decimal] = mapped_column(CRYPTO, default=Decimal("0"), server_default="0")
    frozen: Mapped[Decimal] = mapped_column(CRYPTO, default=Decimal("0"), server_default="0")
    updated_at: Mapped[UpdatedAt]


class BalanceTraderFiat(Base):
    """Fiat a trader received (PayIn, positive) or paid out (PayOut, negative) for the platform."""

    __tablename__ = "balance_traders_fiat"
    __table_args__ = (UniqueConstraint("trader_id", "fiat_currency_id"),)

    id: Mapped[IntPK]
    trader_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("traders.id", ondelete="RESTRICT")
    )
    fiat_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("fiat_currencies.id"))
    balance: Mapped[Decimal] = mapped_column(FIAT, default=Decimal("0"), server_default="0")
    updated_at: Mapped[UpdatedAt]


class BalancePlatform(Base):
    """The platform's profit account per crypto currency (may go negative if commissions invert)."""

    __tablename__ = "balance_platform"

    id: Mapped[IntPK]
    crypto_currency_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("crypto_currencies.id"), unique=True
    )
    balance: Mapped[Decimal] = mapped_column(CRYPTO, default=Decimal("0"), server_default="0")
    updated_at: Mapped[UpdatedAt]


class _HistoryColumns:
    """Columns every balance history row has besides its account and amounts."""

    incoming_order_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("incoming_orders.id")
    )
    order_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("order_history.id"))
    operation: Mapped[str] = mapped_column(String(16))
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]


def _history_args(table: str, account_column: str, frozen: bool) -> tuple[object, ...]:
    args: list[object] = [
        UniqueConstraint(account_column, "incoming_order_id", "operation"),
        enum_check("operation", BalanceOperation),
        Index(f"ix_{table}_account_created", account_column, "created_at"),
        Index(
            f"ix_{table}_incoming_order",
            "incoming_order_id",
            postgresql_where=text("incoming_order_id IS NOT NULL"),
        ),
    ]
    if frozen:
        args.append(CheckConstraint("frozen_after >= 0", name="frozen_after_non_negative"))
    return tuple(args)


class BalanceStoreHistory(_HistoryColumns, Base):
    __tablename__ = "balance_store_history"
    __table_args__ = _history_args("balance_store_history", "balance_store_id", frozen=True)

    id: Mapped[IntPK]
    balance_store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("balance_stores.id"))
    amount: Mapped[Decimal] = mapped_column(CRYPTO)
    # Change of `frozen` (freeze +, release and completion -); `amount` is the change of `balance`.
    frozen_delta: Mapped[Decimal] = mapped_column(CRYPTO, default=Decimal("0"), server_default="0")
    balance_after: Mapped[Decimal] = mapped_column(CRYPTO)
    frozen_after: Mapped[Decimal] = mapped_column(CRYPTO)


class BalanceTraderCryptoHistory(_HistoryColumns, Base):
    __tablename__ = "balance_trader_crypto_history"
    __table_args__ = _history_args(
        "balance_trader_crypto_history", "balance_trader_id", frozen=True
    )

    id: Mapped[IntPK]
    balance_trader_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("balance_traders.id"))
    amount: Mapped[Decimal] = mapped_column(CRYPTO)
    # Change of `frozen` (freeze +, release and completion -); `amount` is the change of `balance`.
    frozen_delta: Mapped[Decimal] = mapped_column(CRYPTO, default=Decimal("0"), server_default="0")
    balance_after: Mapped[Decimal] = mapped_column(CRYPTO)
    frozen_after: Mapped[Decimal] = mapped_column(CRYPTO)


class BalanceTraderFiatHistory(_HistoryColumns, Base):
    __tablename__ = "balance_trader_fiat_history"
    __table_args__ = _history_args(
        "balance_trader_fiat_history", "balance_trader_fiat_id", frozen=False
    )

    id: Mapped[IntPK]
    balance_trader_fiat_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("balance_traders_fiat.id")
    )
    amount: Mapped[Decimal] = mapped_column(FIAT)
    balance_after: Mapped[Decimal] = mapped_column(FIAT)


class BalancePlatformHistory(_HistoryColumns, Base):
    __tablename__ = "balance_platform_history"
    __table_args__ = _history_args("balance_platform_history", "balance_platform_id", frozen=False)

    id: Mapped[IntPK]
    balance_platform_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("balance_platform.id"))
    amount: Mapped[Decimal] = mapped_column(CRYPTO)
    balance_after: Mapped[Decimal] = mapped_column(CRYPTO)
