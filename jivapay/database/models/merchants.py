"""Merchants' stores (gateway credentials, limits, switches) and store commissions."""

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
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jivapay.database.base import FIAT, PERCENT, Base, CreatedAt, IntPK, UpdatedAt
from jivapay.database.models.identity import Merchant
from jivapay.database.types import EncryptedString


class MerchantStore(Base):
    __tablename__ = "merchant_stores"
    __table_args__ = (
        CheckConstraint("lower_limit >= 0 AND lower_limit <= upper_limit", name="limits_ordered"),
        CheckConstraint("order_ttl_minutes > 0", name="ttl_positive"),
    )

    id: Mapped[IntPK]
    merchant_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    store_name: Mapped[str] = mapped_column(String(200))
    crypto_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("crypto_currencies.id"))
    fiat_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("fiat_currencies.id"))
    lower_limit: Mapped[Decimal] = mapped_column(FIAT, default=Decimal("0"))
    upper_limit: Mapped[Decimal] = mapped_column(FIAT)
    public_api_key: Mapped[str] = mapped_column(String(64), unique=True)
    private_api_key: Mapped[str] = mapped_column(EncryptedString())
    private_api_key_last4: Mapped[str] = mapped_column(String(4))
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_secret: Mapped[str] = mapped_column(EncryptedString())
    callbacks_disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callbacks_disabled_reason: Mapped[str | None] = mapped_column(Text)
    pay_in_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    pay_out_enabled: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    access: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    trafic_access: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    gateway_require_customer_id_param: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    gateway_require_amount_param: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=text("true")
    )
    require_payer_receipt: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    order_ttl_minutes: Mapped[int] = mapped_column(Integer, default=15, server_default=text("15"))
    keys_rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    merchant: Mapped[Merchant] = relationship()


class StoreCommission(Base):
    """Store commission rates in percent; the newest row applies."""

    __tablename__ = "store_commissions"
    __table_args__ = (
        CheckConstraint(
            "commission_payin >= 0 AND commission_payin < 100 "
            "AND commission_payout >= 0 AND commission_payout < 100",
            name="percent_range",
        ),
    )

    id: Mapped[IntPK]
    store_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("merchant_stores.id", ondelete="CASCADE"), index=True
    )
    commission_payin: Mapped[Decimal] = mapped_column(PERCENT)
    commission_payout: Mapped[Decimal] = mapped_column(PERCENT)
    created_at: Mapped[CreatedAt]
