"""Users and their role profiles: roles, users, admins, supports, teamleads, merchants, traders."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jivapay.database.base import FIAT, PERCENT, Base, CreatedAt, IntPK, UpdatedAt, enum_check
from jivapay.enums import Role


class RoleModel(Base):
    __tablename__ = "roles"

    id: Mapped[IntPK]
    name: Mapped[str] = mapped_column(String(32), unique=True)
    description: Mapped[str | None] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (enum_check("role", Role),)

    id: Mapped[IntPK]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32), ForeignKey("roles.name"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Carried by every access token; raised to revoke the ones issued before (`revoke_tokens`).
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    anonymized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    admin: Mapped[Admin | None] = relationship(back_populates="user", uselist=False)
    support: Mapped[Support | None] = relationship(back_populates="user", uselist=False)
    teamlead: Mapped[TeamLead | None] = relationship(back_populates="user", uselist=False)
    merchant: Mapped[Merchant | None] = relationship(back_populates="user", uselist=False)
    trader: Mapped[Trader | None] = relationship(back_populates="user", uselist=False)


def _user_fk() -> Mapped[int]:
    return mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), unique=True)


def _permissions() -> Mapped[list[Any]]:
    return mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))


class Admin(Base):
    __tablename__ = "admins"

    id: Mapped[IntPK]
    user_id: Mapped[int] = _user_fk()
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    granted_permissions: Mapped[list[Any]] = _permissions()
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    user: Mapped[User] = relationship(back_populates="admin")


class Support(Base):
    __tablename__ = "supports"

    id: Mapped[IntPK]
    user_id: Mapped[int] = _user_fk()
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    role_description: Mapped[str | None] = mapped_column(Text)
    granted_permissions: Mapped[list[Any]] = _permissions()
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    user: Mapped[User] = relationship(back_populates="support")


class TeamLead(Base):
    __tablename__ = "teamleads"

    id: Mapped[IntPK]
    user_id: Mapped[int] = _user_fk()
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    granted_permissions: Mapped[list[Any]] = _permissions()
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    user: Mapped[User] = relationship(back_populates="teamlead")
    traders: Mapped[list[Trader]] = relationship(back_populates="team_lead")


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[IntPK]
    user_id: Mapped[int] = _user_fk()
    company_name: Mapped[str | None] = mapped_column(String(200))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    is_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    user: Mapped[User] = relationship(back_populates="merchant")


class Trader(Base):
    __tablename__ = "traders"
    __table_args__ = (
        CheckConstraint("trafic_priority >= 0", name="priority_non_negative"),
        CheckConstraint(
            "base_lower_limit IS NULL OR base_upper_limit IS NULL "
            "OR base_lower_limit <= base_upper_limit",
            name="base_limits_ordered",
        ),
    )

    id: Mapped[IntPK]
    user_id: Mapped[int] = _user_fk()
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    team_lead_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("teamleads.id", ondelete="SET NULL"), index=True
    )
    pay_in: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    pay_out: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    in_work: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    is_traffic_enabled_by_teamlead: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=text("true")
    )
    trafic_priority: Mapped[int] = mapped_column(Integer, default=5, server_default=text("5"))
    # Base limits apply to every requisite of the trader, on top of each requisite's own settings.
    base_lower_limit: Mapped[Decimal | None] = mapped_column(FIAT)
    base_upper_limit: Mapped[Decimal | None] = mapped_column(FIAT)
    time_zone_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("time_zones.id"))
    verification_level: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[UpdatedAt]

    user: Mapped[User] = relationship(back_populates="trader")
    team_lead: Mapped[TeamLead | None] = relationship(back_populates="traders")


class TraderCommission(Base):
    """Trader commission rates in percent; the newest row applies."""

    __tablename__ = "trader_commissions"
    __table_args__ = (
        # "The newest row applies": one index probe per trader.
        Index(
            "ix_trader_commissions_newest", "trader_id", text("created_at DESC"), text("id DESC")
        ),
        CheckConstraint(
            "commission_payin >= 0 AND commission_payin < 100 "
            "AND commission_payout >= 0 AND commission_payout < 100",
            name="percent_range",
        ),
    )

    id: Mapped[IntPK]
    trader_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("traders.id", ondelete="CASCADE"))
    commission_payin: Mapped[Decimal] = mapped_column(PERCENT)
    commission_payout: Mapped[Decimal] = mapped_column(PERCENT)
    created_at: Mapped[CreatedAt]
