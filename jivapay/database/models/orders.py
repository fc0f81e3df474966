"""Orders: the intake record and queue (`incoming_orders`), the assigned order (`order_history`),
uploaded documents, callback deliveries and their attempts, and gateway idempotency keys."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jivapay.database.base import (
    CRYPTO,
    FIAT,
    PERCENT,
    RATE,
    Base,
    CreatedAt,
    IntPK,
    UpdatedAt,
    enum_check,
)
from jivapay.database.types import EncryptedString
from jivapay.enums import (
    CallbackStatus,
    DocumentKind,
    IncomingOrderStatus,
    OrderStatus,
    OrderType,
    StatsGrain,
)


class IncomingOrder(Base):
    """What a store asked for, recorded at intake; also the processing queue."""

    __tablename__ = "incoming_orders"
    __table_args__ = (
        UniqueConstraint("store_id", "merchant_order_id"),
        enum_check("status", IncomingOrderStatus),
        enum_check("order_type", OrderType),
        CheckConstraint("amount_fiat > 0", name="amount_fiat_positive"),
        CheckConstraint("amount_crypto > 0", name="amount_crypto_positive"),
        CheckConstraint("exchange_rate > 0", name="rate_positive"),
        CheckConstraint("retry_count >= 0", name="retry_count_non_negative"),
        CheckConstraint("store_hold >= 0", name="store_hold_non_negative"),
        # The worker queue and the sweepers: due retries and orders stuck in `new`.
        Index(
            "ix_incoming_orders_queue",
            "status",
            "next_attempt_at",
            postgresql_where=text("status IN ('new', 'retrying')"),
        ),
        Index("ix_incoming_orders_store_created", "store_id", "created_at"),
        # The staff order search by the merchant's own order id, across stores.
        Index("ix_incoming_orders_merchant_order_id", "merchant_order_id"),
        # Fraud velocity counted in the database when Redis is down (fraud_detector).
        Index(
            "ix_incoming_orders_customer_created",
            "store_id",
            "customer_id",
            "created_at",
            postgresql_where=text("customer_id IS NOT NULL"),
        ),
        Index(
            "ix_incoming_orders_ip_created",
            "customer_ip",
            "created_at",
            postgresql_where=text("customer_ip IS NOT NULL"),
        ),
        # Merchant statistics: the orders that never reached a trader, per store and period.
        Index(
            "ix_incoming_orders_store_unassigned",
            "store_id",
            "created_at",
            postgresql_include=["order_type", "status"],
            postgresql_where=text("status <> 'assigned'"),
        ),
    )

    id: Mapped[IntPK]
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchant_stores.id"))
    order_type: Mapped[str] = mapped_column(String(10))
    fiat_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("fiat_currencies.id"))
    crypto_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("crypto_currencies.id"))
    amount_fiat: Mapped[Decimal] = mapped_column(FIAT)
    amount_crypto: Mapped[Decimal] = mapped_column(CRYPTO)
    exchange_rate: Mapped[Decimal] = mapped_column(RATE)
    store_commission_rate: Mapped[Decimal] = mapped_column(PERCENT)
    store_commission: Mapped[Decimal] = mapped_column(CRYPTO)
    # What intake froze on the store's balance (PayOut: C + C*s; PayIn: 0), released if it never completes.
    store_hold: Mapped[Decimal] = mapped_column(CRYPTO, default=Decimal("0"), server_default="0")
    merchant_order_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    customer_ip: Mapped[str | None] = mapped_column(String(64))
    return_url: Mapped[str | None] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text)
    target_payment_method_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("payment_methods.id")
    )
    target_bank_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("banks.id"))
    beneficiary_number: Mapped[str | None] = mapped_column(EncryptedString())
    beneficiary_last4: Mapped[str | None] = mapped_column(String(4))
    beneficiary_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(
        String(20), default=IncomingOrderStatus.NEW.value, server_default="new"
    )
    retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]


class OrderHistory(Base):
    """An assigned order: the trader, the requisite, the fixed amounts and commissions, its status."""

    __tablename__ = "order_history"
    __table_args__ = (
        enum_check("status", OrderStatus),
        enum_check("order_type", OrderType),
        CheckConstraint("amount_fiat > 0", name="amount_fiat_positive"),
        CheckConstraint("amount_crypto > 0", name="amount_crypto_positive"),
        CheckConstraint(
            "store_commission >= 0 AND trader_commission >= 0", name="commissions_non_negative"
        ),
        CheckConstraint(
            "platform_profit = store_commission - trader_commission", name="profit_is_remainder"
        ),
        CheckConstraint("hold_amount > 0", name="hold_positive"),
        Index("ix_order_history_trader_status_created", "trader_id", "status", "created_at"),
        Index("ix_order_history_store_status_created", "store_id", "status", "created_at"),
        Index("ix_order_history_requisite_created", "requisite_id", "created_at"),
        # One merchant's orders by time: the staff search's newest-first pages (the key, with `id`
        # for ties) and the merchant statistics' index-only scans of a period (the key and the
        # included columns). One index for both, since every assignment inserts into each index of
        # this table (migration 0011 merged two, and dropped the plain `merchant_id` one it covers).
        Index(
            "ix_order_history_merchant_period",
            "merchant_id",
            "created_at",
            "id",
            postgresql_include=[
                "store_id",
                "order_type",
                "status",
                "amount_fiat",
                "amount_crypto",
                "store_commission",
                "completed_at",
            ],
        ),
        # One trader's orders by time, as the merchant's above: the staff search's pages and the
        # trader and team statistics (services/team_statistics.py), an index-only scan per trader
        # over a period carrying every column the grouped counts and sums read.
        Index(
            "ix_order_history_trader_period",
            "trader_id",
            "created_at",
            "id",
            postgresql_include=[
                "status",
                "order_type",
                "fiat_currency_id",
                "crypto_currency_id",
                "amount_fiat",
                "amount_crypto",
                "trader_commission",
                "disputed_at",
            ],
        ),
        # The staff order search (services/staff_queries.py): each filter walks its own index in
        # the order of the page it serves, newest first or by amount (merchant and trader: the
        # period indexes above).
        Index("ix_order_history_created", "created_at", "id"),
        Index("ix_order_history_status_created", "status", "created_at", "id"),
        Index("ix_order_history_store_created", "store_id", "created_at", "id"),
        Index(
            "ix_order_history_customer_created",
            "customer_id",
            "created_at",
            postgresql_where=text("customer_id IS NOT NULL"),
        ),
        Index("ix_order_history_amount", "amount_fiat", "id"),
        # Sweepers: expiry of pending orders and escalation of paid ones.
        Index(
            "ix_order_history_open_deadlines",
            "status",
            "expires_at",
            postgresql_where=text("status IN ('pending', 'paid')"),
        ),
    )

    id: Mapped[IntPK]
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    incoming_order_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("incoming_orders.id"), unique=True
    )
    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchant_stores.id"))
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchants.id"))
    trader_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("traders.id"))
    requisite_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("req_traders.id"))
    payment_method_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("payment_methods.id"))
    bank_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("banks.id"))
    fiat_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("fiat_currencies.id"))
    crypto_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("crypto_currencies.id"))
    order_type: Mapped[str] = mapped_column(String(10))
    amount_fiat: Mapped[Decimal] = mapped_column(FIAT)
    amount_crypto: Mapped[Decimal] = mapped_column(CRYPTO)
    exchange_rate: Mapped[Decimal] = mapped_column(RATE)
    store_commission_rate: Mapped[Decimal] = mapped_column(PERCENT)
    trader_commission_rate: Mapped[Decimal] = mapped_column(PERCENT)
    store_commission: Mapped[Decimal] = mapped_column(CRYPTO)
    trader_commission: Mapped[Decimal] = mapped_column(CRYPTO)
    platform_profit: Mapped[Decimal] = mapped_column(CRYPTO)
    # Frozen for this order: the trader's deposit for a PayIn (C - C*t), the store's balance for a
    # PayOut (C + C*s, frozen at intake).
    hold_amount: Mapped[Decimal] = mapped_column(CRYPTO)
    turnover_bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    turnover_day: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20), default=OrderStatus.PENDING.value)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    customer_ip: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirm_deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disputed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancellation_reason: Mapped[str | None] = mapped_column(Text)
    dispute_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]


class UploadedDocument(Base):
    """A receipt or dispute evidence stored in S3 (the bytes live there, not here)."""

    __tablename__ = "uploaded_documents"
    __table_args__ = (
        enum_check("kind", DocumentKind),
        CheckConstraint("size_bytes > 0", name="size_positive"),
    )

    id: Mapped[IntPK]
    order_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("order_history.id"), index=True
    )
    uploaded_by_user_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(32))
    s3_key: Mapped[str] = mapped_column(String(512), unique=True)
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[CreatedAt]


class CallbackDelivery(Base):
    """One merchant notification (written in the transaction of the status change it reports)."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        enum_check("status", CallbackStatus),
        Index(
            "ix_callback_deliveries_due",
            "status",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_callback_deliveries_store_created", "store_id", "created_at"),
    )

    id: Mapped[IntPK]
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchant_stores.id"))
    incoming_order_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("incoming_orders.id"), index=True
    )
    order_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("order_history.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=CallbackStatus.PENDING.value)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]


class CallbackDeliveryAttempt(Base):
    __tablename__ = "callback_delivery_attempts"

    id: Mapped[IntPK]
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("callback_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[CreatedAt]
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)


class IdempotencyKey(Base):
    """An `Idempotency-Key` of a store (gateway) or of a staff user (money moves): the request's
    fingerprint and, once done, its response."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("store_id", "key"),
        UniqueConstraint("user_id", "key"),
        CheckConstraint("char_length(key) BETWEEN 1 AND 255", name="key_length"),
        CheckConstraint("num_nonnulls(store_id, user_id) = 1", name="one_owner"),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    id: Mapped[IntPK]
    store_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("merchant_stores.id", ondelete="CASCADE")
    )
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(String(255))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[CreatedAt]
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# Sums wide enough for a year of any store's or trader's orders, at the scale of their column.
_FIAT_SUM = Numeric(38, 2, asdecimal=True)
_CRYPTO_SUM = Numeric(38, 8, asdecimal=True)


class _OrderStatsMeasures:
    """What one rollup row adds up over the orders of its key (an order counts in the row of its
    current status; its `disputes` share is 1 once it was ever disputed)."""

    grain: Mapped[str] = mapped_column(String(5))
    period_start: Mapped[date] = mapped_column(Date)
    order_type: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    fiat_currency_id: Mapped[int] = mapped_column(BigInteger)
    crypto_currency_id: Mapped[int] = mapped_column(BigInteger)
    orders: Mapped[int] = mapped_column(BigInteger, default=0)
    disputes: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_fiat: Mapped[Decimal] = mapped_column(_FIAT_SUM, default=Decimal("0"))
    amount_crypto: Mapped[Decimal] = mapped_column(_CRYPTO_SUM, default=Decimal("0"))
    store_commission: Mapped[Decimal] = mapped_column(_CRYPTO_SUM, default=Decimal("0"))
    trader_commission: Mapped[Decimal] = mapped_column(_CRYPTO_SUM, default=Decimal("0"))
    platform_profit: Mapped[Decimal] = mapped_column(_CRYPTO_SUM, default=Decimal("0"))
    # Sum of `completed_at - created_at` in seconds (microseconds kept) of the completed orders.
    completion_seconds: Mapped[Decimal] = mapped_column(
        Numeric(38, 6, asdecimal=True), default=Decimal("0")
    )


class OrderStatsStore(_OrderStatsMeasures, Base):
    """The merchant's view of `order_history` per UTC day and per UTC month (`grain`): per
    merchant, store, type, status and currency pair. Written only by the database trigger of
    migration 0009 (see services/order_stats_rollup.py); read by the merchant statistics."""

    __tablename__ = "order_stats_store"
    __table_args__ = (
        enum_check("grain", StatsGrain),
        PrimaryKeyConstraint(
            "merchant_id",
            "grain",
            "period_start",
            "store_id",
            "order_type",
            "status",
            "fiat_currency_id",
            "crypto_currency_id",
        ),
    )

    merchant_id: Mapped[int] = mapped_column(BigInteger)
    store_id: Mapped[int] = mapped_column(BigInteger)


class OrderStatsTrader(_OrderStatsMeasures, Base):
    """The trader's view of `order_history` per UTC day and per UTC month (`grain`): per trader,
    type, status and currency pair. Written only by the trigger of migration 0009; read by the
    trader and teamlead statistics."""

    __tablename__ = "order_stats_trader"
    __table_args__ = (
        enum_check("grain", StatsGrain),
        PrimaryKeyConstraint(
            "trader_id",
            "grain",
            "period_start",
            "order_type",
            "status",
            "fiat_currency_id",
            "crypto_currency_id",
        ),
    )

    trader_id: Mapped[int] = mapped_column(BigInteger)
