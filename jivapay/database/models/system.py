"""System tables: run-time settings, the audit log and fraud lists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jivapay.database.base import Base, CreatedAt, IntPK, enum_check, utcnow
from jivapay.enums import AuditLevel, ConfigValueType, FraudListKind, FraudListType


class ConfigurationSetting(Base):
    """A business setting editable at run time (declared in `utils.config_loader`)."""

    __tablename__ = "configuration_settings"
    __table_args__ = (enum_check("value_type", ConfigValueType),)

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    value_type: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=text("now()")
    )
    updated_by_user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )


class AuditLog(Base):
    __tablename__ = "audit_logs"
    __table_args__ = (
        enum_check("level", AuditLevel),
        Index("ix_audit_logs_created_at", "created_at"),
        Index("ix_audit_logs_user_created", "user_id", "created_at"),
        Index("ix_audit_logs_target", "target_entity", "target_id"),
        Index("ix_audit_logs_action_created", "action", "created_at"),
    )

    id: Mapped[IntPK]
    created_at: Mapped[CreatedAt]
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    ip_address: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(100))
    target_entity: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    level: Mapped[str] = mapped_column(String(16), default=AuditLevel.INFO.value)


class FraudList(Base):
    __tablename__ = "fraud_lists"
    __table_args__ = (
        UniqueConstraint("kind", "value", "list_type"),
        # The fraud check reads every network entry (matched in Python) for each order with an
        # address; without this it walks every IP entry to find the few networks.
        Index(
            "ix_fraud_lists_ip_networks",
            "id",
            postgresql_where=text("kind = 'ip' AND value LIKE '%/%'"),
        ),
        enum_check("kind", FraudListKind),
        enum_check("list_type", FraudListType),
    )

    id: Mapped[IntPK]
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    list_type: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    created_by_user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[CreatedAt]
