"""Administration of reference data and exchange rates: list, create and change countries, fiat and
crypto currencies, banks, payment methods, which bank offers which method in which fiat, and time
zones; list and set exchange rates.

Rows are never deleted: a currency, bank, method or bank-method is deactivated (`is_active`);
countries and time zones have no such flag and are only renamed or corrected. Codes never change
once created (orders and caches refer to them). A duplicate code is 409, an unknown referenced row
422. Changes go through `reference_data`'s change-and-audit helpers, so the Redis cache keys a row
feeds are deleted once the transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, inspect, or_, select
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
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
from jivapay.database.utils import integrity_errors_as_domain_errors
from jivapay.schemas.admin import (
    BankCreate,
    BankMethodCreate,
    BankMethodUpdate,
    BankUpdate,
    CountryCreate,
    CountryUpdate,
    CryptoCurrencyCreate,
    CryptoCurrencyUpdate,
    ExchangeRateRead,
    FiatCurrencyCreate,
    FiatCurrencyUpdate,
    PaymentMethodCreate,
    PaymentMethodUpdate,
    ReferenceChanged,
    TimeZoneCreate,
    TimeZoneUpdate,
)
from jivapay.schemas.common import Page
from jivapay.services import reference_data
from jivapay.services.audit_logger import log_event
from jivapay.services.trader_day import is_known_zone
from jivapay.utils.config_loader import runtime_settings
from jivapay.utils.exceptions import DuplicateObject, NotFound, ValidationFailed


@dataclass(frozen=True)
class ReferenceKind:
    """One kind of reference row as the admin API names it."""

    path: str
    model: type[Any]
    entity: str
    create: type[BaseModel]
    update: type[BaseModel]
    natural_key: tuple[str, ...]


KINDS: dict[str, ReferenceKind] = {
    k.path: k
    for k in (
        ReferenceKind("countries", Country, "country", CountryCreate, CountryUpdate, ("code",)),
        ReferenceKind(
            "fiat-currencies",
            FiatCurrency,
            "fiat_currency",
            FiatCurrencyCreate,
            FiatCurrencyUpdate,
            ("code",),
        ),
        ReferenceKind(
            "crypto-currencies",
            CryptoCurrency,
            "crypto_currency",
            CryptoCurrencyCreate,
            CryptoCurrencyUpdate,
            ("code",),
        ),
        ReferenceKind("banks", Bank, "bank", BankCreate, BankUpdate, ("code",)),
        ReferenceKind(
            "payment-methods",
            PaymentMethod,
            "payment_method",
            PaymentMethodCreate,
            PaymentMethodUpdate,
            ("code",),
        ),
        ReferenceKind(
            "bank-methods",
            AvailableBankMethod,
            "bank_method",
            BankMethodCreate,
            BankMethodUpdate,
            ("fiat_currency_id", "bank_id", "payment_method_id"),
        ),
        ReferenceKind(
            "time-zones", TimeZone, "time_zone", TimeZoneCreate, TimeZoneUpdate, ("name",)
        ),
    )
}


def kind_of(path: str) -> ReferenceKind:
    """The reference kind behind a URL segment; `NotFound` for an unknown one."""
    try:
        return KINDS[path]
    except KeyError:
        raise NotFound(f"unknown reference kind {path!r}") from None


def row_dict(row: Any) -> dict[str, Any]:
    """Every column of a reference row."""
    return {attr.key: getattr(row, attr.key) for attr in inspect(row).mapper.column_attrs}


def list_rows(
    session: Session,
    *,
    kind: ReferenceKind,
    active: bool | None,
    search: str | None,
    limit: int,
    offset: int,
) -> Page[dict[str, Any]]:
    """Rows of one kind, filtered by active flag and a search over code and name."""
    model = kind.model
    stmt = select(model)
    if active is not None:
        if not hasattr(model, "is_active"):
            raise ValidationFailed(f"{kind.path} have no active flag")
        stmt = stmt.where(model.is_active.is_(active))
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        columns = [getattr(model, c) for c in ("code", "name") if hasattr(model, c)]
        if columns:
            stmt = stmt.where(or_(*(c.ilike(pattern) for c in columns)))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(model.id).limit(limit).offset(offset)).all()
    return Page(items=[row_dict(r) for r in rows], total=total, limit=limit, offset=offset)


def _duplicate(session: Session, kind: ReferenceKind, values: dict[str, Any]) -> bool:
    model = kind.model
    clauses = [getattr(model, key) == values[key] for key in kind.natural_key]
    return session.scalar(select(model.id).where(*clauses)) is not None


def create_row(
    session: Session,
    *,
    kind: ReferenceKind,
    body: BaseModel,
    actor_user_id: int,
    ip_address: str | None = None,
) -> ReferenceChanged:
    """Insert one reference row (409 on a duplicate code, 422 on a dangling reference). Audited."""
    values = body.model_dump()
    if kind.model is TimeZone and not is_known_zone(session, values["name"]):
        raise ValidationFailed(f"{values['name']!r} is not an IANA time zone name")
    if _duplicate(session, kind, values):
        label = "/".join(str(values[k]) for k in kind.natural_key)
        raise DuplicateObject(f"{kind.entity} {label} already exists")
    if kind.model is AvailableBankMethod:
        # The availability helper audits it and invalidates the fiat's method list after commit.
        with integrity_errors_as_domain_errors(session):
            reference_data.set_bank_method_availability(
                session, **values, actor_user_id=actor_user_id, ip_address=ip_address
            )
        row = session.scalars(
            select(AvailableBankMethod).filter_by(**{k: values[k] for k in kind.natural_key})
        ).one()
        return ReferenceChanged(item=row_dict(row), changed=True)
    with integrity_errors_as_domain_errors(session):
        row = kind.model(**values)
        session.add(row)
        session.flush()
    log_event(
        session,
        action=f"{kind.entity}.created",
        user_id=actor_user_id,
        target_entity=kind.entity,
        target_id=row.id,
        details=values,
        ip_address=ip_address,
    )
    return ReferenceChanged(item=row_dict(row), changed=True)


def update_row(
    session: Session,
    *,
    kind: ReferenceKind,
    row_id: int,
    body: BaseModel,
    actor_user_id: int,
    ip_address: str | None = None,
) -> ReferenceChanged:
    """Change a reference row's fields (codes never change). Audited; caches invalidated after commit."""
    requested = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    row = session.get(kind.model, row_id, with_for_update=True)
    if row is None:
        raise NotFound(f"{kind.entity} not found")
    before = row_dict(row)
    with integrity_errors_as_domain_errors(session):
        if kind.model is Bank:
            reference_data.update_bank(
                session,
                bank_id=row_id,
                actor_user_id=actor_user_id,
                ip_address=ip_address,
                **requested,
            )
        elif kind.model is PaymentMethod:
            reference_data.update_payment_method(
                session,
                payment_method_id=row_id,
                actor_user_id=actor_user_id,
                ip_address=ip_address,
                **requested,
            )
        elif kind.model is AvailableBankMethod:
            if "is_active" in requested and requested["is_active"] != row.is_active:
                reference_data.set_bank_method_availability(
                    session,
                    fiat_currency_id=row.fiat_currency_id,
                    bank_id=row.bank_id,
                    payment_method_id=row.payment_method_id,
                    is_active=requested["is_active"],
                    actor_user_id=actor_user_id,
                    ip_address=ip_address,
                )
        else:
            reference_data.apply_reference_changes(
                session,
                row,
                requested,
                entity=kind.entity,
                actor_user_id=actor_user_id,
                ip_address=ip_address,
            )
    after = row_dict(row)
    return ReferenceChanged(item=after, changed=after != before)


# --------------------------------------------------------------------------- exchange rates


def list_rates(session: Session, *, now: datetime | None = None) -> list[ExchangeRateRead]:
    """Every pair's rate with its age and whether intake would refuse it as stale."""
    at = now or utcnow()
    max_age = runtime_settings(session).EXCHANGE_RATE_MAX_AGE_SECONDS
    rows = session.execute(
        select(ExchangeRate, CryptoCurrency.code, FiatCurrency.code)
        .join(CryptoCurrency, CryptoCurrency.id == ExchangeRate.crypto_currency_id)
        .join(FiatCurrency, FiatCurrency.id == ExchangeRate.fiat_currency_id)
        .order_by(CryptoCurrency.code, FiatCurrency.code)
    ).all()
    result = []
    for rate, crypto, fiat in rows:
        age = max(0, int((at - rate.updated_at).total_seconds()))
        result.append(
            ExchangeRateRead(
                crypto=crypto,
                fiat=fiat,
                buy_rate=rate.buy_rate,
                sell_rate=rate.sell_rate,
                median_rate=rate.median_rate,
                source=rate.source,
                updated_at=rate.updated_at,
                age_seconds=age,
                stale=age > max_age,
            )
        )
    return result


def set_rate(
    session: Session,
    *,
    crypto: str,
    fiat: str,
    buy: Any,
    sell: Any,
    median: Any,
    actor_user_id: int,
    ip_address: str | None = None,
) -> ExchangeRateRead:
    """Set one pair's rate by currency codes (manual source). Audited; cache invalidated."""
    view = reference_data.set_exchange_rate(
        session,
        crypto=crypto,
        fiat=fiat,
        buy=buy,
        sell=sell,
        median=median,
        actor_user_id=actor_user_id,
        ip_address=ip_address,
    )
    return ExchangeRateRead(
        crypto=crypto.upper(),
        fiat=fiat.upper(),
        buy_rate=view.buy_rate,
        sell_rate=view.sell_rate,
        median_rate=view.median_rate,
        source=view.source,
        updated_at=view.updated_at,
        age_seconds=0,
        stale=False,
    )
