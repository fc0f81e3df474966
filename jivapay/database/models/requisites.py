"""Traders' bank requisites: the holder, the requisite (card/account number encrypted at rest) and
its 1:1 limits settings."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from jivapay.database.base import FIAT, Base, CreatedAt, IntPK, UpdatedAt, enum_check
from jivapay.database.types import EncryptedString, fingerprint
from jivapay.enums import RequisiteStatus


class OwnerOfRequisites(Base):
    """The holder of a card or account (PII; anonymised on a GDPR request)."""

    __tablename__ = "owner_of_requisites"

    id: Mapped[IntPK]
    trader_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("traders.id", ondelete="CASCADE"), index=True
    )
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    middle_name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[CreatedAt]

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.last_name, self.first_name, self.middle_name) if p)


class ReqTrader(Base):
    """A trader's requisite (card or account) that payers pay to or payouts are sent from."""

    __tablename__ = "req_traders"
    __table_args__ = (
        enum_check("status", RequisiteStatus),
        CheckConstraint("char_length(req_last4) BETWEEN 1 AND 4", name="last4_length"),
        CheckConstraint("open_orders >= 0", name="open_orders_non_negative"),
        # The staff order search by a requisite's last four digits.
        Index("ix_req_traders_last4", "req_last4"),
        # The selector walks this index in its exact order (priority, then least recently used)
        # and stops at the first requisite that passes, instead of sorting every candidate.
        Index(
            "ix_req_traders_rotation",
            "fiat_currency_id",
            "distribution_weight",
            text("last_used_at NULLS FIRST"),
            "id",
            postgresql_where=text("status = 'approved' AND NOT is_excluded_from_distribution"),
        ),
        # One card or account, one trader: a number in use (not archived) belongs to one
        # requisite of one trader, or two traders would double its limits and take each other's
        # payers. An archived requisite (terminal) frees its number to be added again.
        Index(
            "uq_req_traders_number",
            "req_number_hash",
            unique=True,
            postgresql_where=text("status <> 'archived'"),
        ),
    )

    id: Mapped[IntPK]
    trader_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("traders.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("owner_of_requisites.id", ondelete="RESTRICT"), index=True
    )
    fiat_currency_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("fiat_currencies.id"))
    payment_method_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("payment_methods.id"))
    bank_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("banks.id"))
    req_number: Mapped[str] = mapped_column(EncryptedString())
    req_last4: Mapped[str] = mapped_column(String(4))
    # Keyed hash of the digits (`types.fingerprint`), set whenever `req_number` is: equality
    # without decrypting, for the duplicate check.
    req_number_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(
        String(20),
        default=RequisiteStatus.PENDING_REVIEW.value,
        server_default=RequisiteStatus.PENDING_REVIEW.value,
    )
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The trader's `trafic_priority`, copied here so the selector can order by an index of this
    # table; `trader_service.set_traffic_priority` keeps the two in sync.
    distribution_weight: Mapped[int] = mapped_column(Integer, default=5, server_default=text("5"))
    is_excluded_from_distribution: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # Orders assigned to this requisite and not yet completed, canceled or expired; kept current in
    # the transactions that open and close orders so the selector never counts order history.
    open_orders: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    owner: Mapped[OwnerOfRequisites] = relationship()

    @validates("req_number")
    def _keep_number_hash(self, _key: str, value: str) -> str:
        self.req_number_hash = fingerprint(value)
        return value

    settings: Mapped[FullRequisitesSettings | None] = relationship(
        back_populates="requisite", uselist=False
    )


class FullRequisitesSettings(Base):
    """Per-requisite directions and limits (static and dynamic)."""

    __tablename__ = "full_requisites_settings"
    __table_args__ = (
        CheckConstraint("lower_limit >= 0 AND lower_limit <= upper_limit", name="limits_ordered"),
        CheckConstraint("total_limit IS NULL OR total_limit > 0", name="total_limit_positive"),
        CheckConstraint(
            "turnover_limit_minutes IS NULL OR turnover_limit_minutes > 0", name="window_positive"
        ),
        CheckConstraint(
            "turnover_day_max IS NULL OR turnover_day_max > 0", name="day_max_positive"
        ),
        CheckConstraint(
            "max_concurrent_orders IS NULL OR max_concurrent_orders > 0",
            name="concurrency_positive",
        ),
    )

    id: Mapped[IntPK]
    requisite_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("req_traders.id", ondelete="CASCADE"), unique=True
    )
    pay_in: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    pay_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    lower_limit: Mapped[Decimal] = mapped_column(FIAT, default=Decimal("0"))
    upper_limit: Mapped[Decimal] = mapped_column(FIAT)
    total_limit: Mapped[Decimal | None] = mapped_column(FIAT)
    turnover_limit_minutes: Mapped[int | None] = mapped_column(Integer)
    turnover_day_max: Mapped[Decimal | None] = mapped_column(FIAT)
    max_concurrent_orders: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[UpdatedAt]

    requisite: Mapped[ReqTrader] = relationship(back_populates="settings")


class RequisiteTurnoverBucket(Base):
    """Fiat turnover of a requisite per minute of assignment (open and completed orders).

    The rolling-window limit sums at most `turnover_limit_minutes` rows of one requisite, whatever
    the size of the order history; canceled and expired orders are subtracted from their bucket.
    """

    __tablename__ = "requisite_turnover_buckets"
    __table_args__ = (CheckConstraint("amount_fiat >= 0", name="amount_non_negative"),)

    requisite_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("req_traders.id", ondelete="CASCADE"), primary_key=True
    )
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    amount_fiat: Mapped[Decimal] = mapped_column(FIAT, default=Decimal("0"))


class RequisiteDailyTurnover(Base):
    """Fiat turnover of a requisite per day in its trader's time zone (open and completed orders)."""

    __tablename__ = "requisite_daily_turnover"
    __table_args__ = (CheckConstraint("amount_fiat >= 0", name="amount_non_negative"),)

    requisite_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("req_traders.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    amount_fiat: Mapped[Decimal] = mapped_column(FIAT, default=Decimal("0"))
