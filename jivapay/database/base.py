"""Declarative base, metadata naming convention and the column types shared by every model.

The naming convention makes constraint names predictable (`uq_<table>_<cols>`, `ck_<table>_<name>`),
which migrations rely on and `database.utils.translate_integrity_error` reads back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, MetaData, Numeric, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """`value` made aware: a naive datetime is read as UTC (so naive and aware ones compare)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# Money columns: fiat has 2 places, crypto amounts and rates 8, commission percentages 4.
FIAT = Numeric(20, 2, asdecimal=True)
CRYPTO = Numeric(20, 8, asdecimal=True)
RATE = Numeric(20, 8, asdecimal=True)
PERCENT = Numeric(7, 4, asdecimal=True)

IntPK = Annotated[int, mapped_column(BigInteger, primary_key=True, autoincrement=True)]
Fiat = Annotated[Decimal, mapped_column(FIAT)]
Crypto = Annotated[Decimal, mapped_column(CRYPTO)]
CreatedAt = Annotated[
    datetime, mapped_column(DateTime(timezone=True), server_default=func.now(), default=utcnow)
]
UpdatedAt = Annotated[
    datetime,
    mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow, onupdate=utcnow
    ),
]


def enum_check(column: str, enum: type[StrEnum], name: str | None = None) -> CheckConstraint:
    """A check constraint limiting a text column to an enum's values."""
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=name or f"{column}_valid")
