"""Traders' requisites: registration (validated, encrypted, one trader per number), listing with
live usage, settings changes, the moderation status machine and the audited reveal of a full number.

Moderation (staff; a trader may only archive):

    from \\ to       approved   blocked   archived
    pending_review   yes        yes       yes
    approved         -          yes       yes
    blocked          yes        -         yes
    archived         (terminal: nothing)

The same status again is a repeat (`changed: false`); anything else is `InvalidStatusTransition`.
Blocking or archiving only takes the requisite out of selection (the selector wants `approved`):
orders already assigned to it finish normally.

Every query is scoped by `utils.query_filters.requisites_visible_to`, so another owner's requisite
is not found. Usage (today's and the window's turnover, open orders, last use) comes from the
counters the order engine keeps (`requisite_daily_turnover`, `requisite_turnover_buckets`,
`req_traders.open_orders`), computed exactly as the selector computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, exists, func, literal, select
from sqlalchemy.orm import Session
from stdnum import luhn

from jivapay.database.base import utcnow
from jivapay.database.models import (
    AvailableBankMethod,
    Bank,
    FiatCurrency,
    FullRequisitesSettings,
    OwnerOfRequisites,
    PaymentMethod,
    ReqTrader,
    RequisiteDailyTurnover,
    RequisiteTurnoverBucket,
    TimeZone,
    Trader,
)
from jivapay.database.types import fingerprint, last4, mask_number
from jivapay.database.utils import integrity_errors_as_domain_errors
from jivapay.enums import OrderType, RequisiteStatus
from jivapay.schemas.requisites import (
    RequisiteCreate,
    RequisiteRead,
    RequisiteSettingsFields,
    RequisiteSettingsRead,
    RequisiteStaffRead,
    RequisiteUsageRead,
)
from jivapay.security import Principal
from jivapay.services.audit_logger import log_event
from jivapay.services.trader_day import trader_day_sql
from jivapay.utils.exceptions import (
    Conflict,
    DuplicateObject,
    InvalidStatusTransition,
    NotFound,
    ValidationFailed,
)
from jivapay.utils.query_filters import requisites_visible_to

S = RequisiteStatus

TRANSITIONS: dict[RequisiteStatus, frozenset[RequisiteStatus]] = {
    S.PENDING_REVIEW: frozenset({S.APPROVED, S.BLOCKED, S.ARCHIVED}),
    S.APPROVED: frozenset({S.BLOCKED, S.ARCHIVED}),
    S.BLOCKED: frozenset({S.APPROVED, S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}

# The payment method whose numbers are bank cards (Luhn); every other method takes an account
# or phone-style number of ACCOUNT_LENGTH digits.
CARD_METHOD = "card"
CARD_LENGTH = range(13, 20)
ACCOUNT_LENGTH = range(10, 31)

NUMBER_TAKEN = "this number is already registered as a requisite"
_YOURS = "you already have a requisite with this number"
# The unique index of numbers in use (migration 0013), and the per-trader one it replaced, which a
# database not yet migrated still has.
_NUMBER_INDEXES = ("uq_req_traders_number", "uq_req_traders_trader_number")

# Settings that may be cleared with an explicit `null` in an update.
_NULLABLE_SETTINGS = frozenset(
    {"total_limit", "turnover_limit_minutes", "turnover_day_max", "max_concurrent_orders"}
)
_SETTINGS_FIELDS = (
    "pay_in",
    "pay_out",
    "lower_limit",
    "upper_limit",
    "total_limit",
    "turnover_limit_minutes",
    "turnover_day_max",
    "max_concurrent_orders",
)


@dataclass(frozen=True)
class RequisiteFilters:
    status: RequisiteStatus | None = None
    fiat_currency: str | None = None
    direction: OrderType | None = None
    trader_id: int | None = None
    bank: str | None = None
    payment_method: str | None = None
    last4: str | None = None
    excluded: bool | None = None


@dataclass(frozen=True)
class Actor:
    """Who changes a requisite, for the audit row."""

    user_id: int
    ip_address: str | None = None


# --------------------------------------------------------------------------- reading


def _minutes(column: Any) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, column)


def _read_statement(now: datetime) -> Any:
    now_at = literal(now, DateTime(timezone=True))
    bucket = literal(now.replace(second=0, microsecond=0), DateTime(timezone=True))
    # The trader-local day, as the selector's `turnover_slots` computes it.
    local_day = trader_day_sql(now_at, TimeZone.name)
    today = (
        select(RequisiteDailyTurnover.amount_fiat)
        .where(RequisiteDailyTurnover.requisite_id == ReqTrader.id)
        .where(RequisiteDailyTurnover.day == local_day)
        .correlate(ReqTrader, TimeZone)
        .scalar_subquery()
    )
    window = (
        select(func.coalesce(func.sum(RequisiteTurnoverBucket.amount_fiat), 0))
        .where(RequisiteTurnoverBucket.requisite_id == ReqTrader.id)
        .where(FullRequisitesSettings.turnover_limit_minutes.is_not(None))
        .where(
            RequisiteTurnoverBucket.bucket_start
            >= bucket - _minutes(FullRequisitesSettings.turnover_limit_minutes)  # as the selector
        )
        .correlate(ReqTrader, FullRequisitesSettings)
        .scalar_subquery()
    )
    return (
        select(
            ReqTrader,
            FullRequisitesSettings,
            OwnerOfRequisites,
            FiatCurrency.code.label("fiat"),
            PaymentMethod.code.label("method"),
            Bank.code.label("bank"),
            today.label("today"),
            window.label("window"),
        )
        .join(FullRequisitesSettings, FullRequisitesSettings.requisite_id == ReqTrader.id)
        .join(OwnerOfRequisites, OwnerOfRequisites.id == ReqTrader.owner_id)
        .join(FiatCurrency, FiatCurrency.id == ReqTrader.fiat_currency_id)
        .join(PaymentMethod, PaymentMethod.id == ReqTrader.payment_method_id)
        .join(Bank, Bank.id == ReqTrader.bank_id)
        .join(Trader, Trader.id == ReqTrader.trader_id)
        .outerjoin(TimeZone, TimeZone.id == Trader.time_zone_id)
    )


def _to_read(row: Any, model: type[RequisiteRead] = RequisiteRead, **extra: Any) -> Any:
    req: ReqTrader = row.ReqTrader
    s: FullRequisitesSettings = row.FullRequisitesSettings
    return model(
        id=req.id,
        trader_id=req.trader_id,
        status=RequisiteStatus(req.status),
        fiat_currency=row.fiat,
        payment_method=row.method,
        bank=row.bank,
        number_masked=mask_number(req.req_last4) or "",
        owner_id=req.owner_id,
        holder_name=row.OwnerOfRequisites.full_name,
        distribution_weight=req.distribution_weight,
        is_excluded_from_distribution=req.is_excluded_from_distribution,
        settings=RequisiteSettingsRead.model_validate(s, from_attributes=True),
        usage=RequisiteUsageRead(
            turnover_today=row.today or Decimal("0.00"),
            turnover_window=row.window or Decimal("0.00"),
            open_orders=req.open_orders,
            last_used_at=req.last_used_at,
        ),
        created_at=req.created_at,
        updated_at=req.updated_at,
        **extra,
    )


def _filter_conditions(filters: RequisiteFilters) -> list[Any]:
    conditions: list[Any] = []
    if filters.status is not None:
        conditions.append(ReqTrader.status == filters.status.value)
    if filters.fiat_currency is not None:
        conditions.append(FiatCurrency.code == filters.fiat_currency.upper())
    if filters.direction == OrderType.PAYIN:
        conditions.append(FullRequisitesSettings.pay_in.is_(True))
    elif filters.direction == OrderType.PAYOUT:
        conditions.append(FullRequisitesSettings.pay_out.is_(True))
    if filters.trader_id is not None:
        conditions.append(ReqTrader.trader_id == filters.trader_id)
    if filters.bank is not None:
        conditions.append(Bank.code == filters.bank)
    if filters.payment_method is not None:
        conditions.append(PaymentMethod.code == filters.payment_method)
    if filters.last4 is not None:
        conditions.append(ReqTrader.req_last4 == filters.last4)
    if filters.excluded is not None:
        conditions.append(ReqTrader.is_excluded_from_distribution.is_(filters.excluded))
    return conditions


def list_requisites(
    session: Session,
    *,
    principal: Principal,
    filters: RequisiteFilters,
    limit: int,
    offset: int,
    staff_view: bool = False,
) -> tuple[list[Any], int]:
    """The requisites the caller may see, newest first, with live usage and the total count."""
    conditions = [requisites_visible_to(principal), *_filter_conditions(filters)]
    base = _read_statement(utcnow()).where(*conditions)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(ReqTrader.created_at.desc(), ReqTrader.id.desc()).limit(limit).offset(offset)
    ).all()
    model = RequisiteStaffRead if staff_view else RequisiteRead
    return [_to_read(row, model) for row in rows], total


def get_requisite(
    session: Session,
    *,
    principal: Principal,
    requisite_id: int,
    model: type[RequisiteRead] = RequisiteRead,
    **extra: Any,
) -> Any:
    """One requisite the caller may see (as `model`), or `NotFound`."""
    row = session.execute(
        _read_statement(utcnow()).where(
            ReqTrader.id == requisite_id, requisites_visible_to(principal)
        )
    ).first()
    if row is None:
        raise NotFound("requisite not found")
    return _to_read(row, model, **extra)


def reveal_number(
    session: Session, *, principal: Principal, requisite_id: int, actor: Actor
) -> str:
    """The full number of a requisite the caller may see; every reveal is audited."""
    req = session.scalars(
        select(ReqTrader).where(ReqTrader.id == requisite_id, requisites_visible_to(principal))
    ).first()
    if req is None:
        raise NotFound("requisite not found")
    log_event(
        session,
        action="requisite.number_revealed",
        user_id=actor.user_id,
        target_entity="requisite",
        target_id=req.id,
        details={"trader_id": req.trader_id, "last4": req.req_last4},
        ip_address=actor.ip_address,
    )
    return req.req_number


# --------------------------------------------------------------------------- registration


def validate_number(number: str, *, payment_method: str) -> str:
    """The number if it is valid for the method (digits; Luhn for cards), else `ValidationFailed`."""
    if not (number.isascii() and number.isdigit()):
        raise ValidationFailed("the number must contain digits only", code="invalid_number")
    if payment_method == CARD_METHOD:
        # A payment card's first digit (its industry, ISO/IEC 7812) is never 0; all zeros would
        # otherwise pass the Luhn check.
        if len(number) not in CARD_LENGTH or number[0] == "0" or not luhn.is_valid(number):
            raise ValidationFailed(
                "not a valid card number (13-19 digits, not starting with 0, passing the Luhn "
                "check)",
                code="invalid_number",
            )
    elif len(number) not in ACCOUNT_LENGTH:
        raise ValidationFailed(
            f"an account number has {ACCOUNT_LENGTH.start}-{ACCOUNT_LENGTH.stop - 1} digits",
            code="invalid_number",
        )
    return number


def _by_code(session: Session, model: Any, code: str, label: str) -> Any:
    row = session.scalars(select(model).where(model.code == code)).first()
    if row is None or not row.is_active:
        raise ValidationFailed(f"unknown or inactive {label} {code!r}", code=f"unknown_{label}")
    return row


def _check_limits(values: dict[str, Any]) -> None:
    if values["lower_limit"] > values["upper_limit"]:
        raise ValidationFailed("lower_limit must not exceed upper_limit", code="limits_unordered")
    if values["total_limit"] is not None and values["turnover_limit_minutes"] is None:
        raise ValidationFailed(
            "total_limit needs turnover_limit_minutes (its rolling window)",
            code="window_required",
        )


def number_holder(session: Session, number: str) -> int | None:
    """The trader holding `number` in a requisite not archived, if any (there is at most one)."""
    holder: int | None = session.scalar(
        select(ReqTrader.trader_id)
        .where(
            ReqTrader.req_number_hash == fingerprint(number),
            ReqTrader.status != S.ARCHIVED.value,
        )
        .limit(1)
    )
    return holder


def ensure_number_free(session: Session, number: str, *, trader_id: int) -> None:
    """Refuse (`DuplicateObject`) a number held by a requisite not archived, whoever holds it.

    One card or account belongs to one trader: a second holder would double its limits and be
    handed payers who pay the first. The message never says who the other holder is.
    """
    holder = number_holder(session, number)
    if holder is None:
        return
    if holder == trader_id:
        raise DuplicateObject(_YOURS)
    raise DuplicateObject(NUMBER_TAKEN)


def create_requisite(
    session: Session, *, principal: Principal, data: RequisiteCreate, actor: Actor
) -> RequisiteRead:
    """Register a requisite of the calling trader; it waits in `pending_review` for staff."""
    trader = session.get(Trader, principal.profile_id)
    if trader is None:
        raise NotFound("trader profile not found")
    fiat = _by_code(session, FiatCurrency, data.fiat_currency.upper(), "fiat_currency")
    method = _by_code(session, PaymentMethod, data.payment_method, "payment_method")
    bank = _by_code(session, Bank, data.bank, "bank")
    offered = session.scalar(
        select(
            exists().where(
                AvailableBankMethod.fiat_currency_id == fiat.id,
                AvailableBankMethod.bank_id == bank.id,
                AvailableBankMethod.payment_method_id == method.id,
                AvailableBankMethod.is_active.is_(True),
            )
        )
    )
    if not offered:
        raise ValidationFailed(
            f"{bank.code} does not offer {method.code} in {fiat.code}",
            code="method_not_available",
        )
    number = validate_number(data.number, payment_method=method.code)
    settings = {
        "pay_in": True if data.pay_in is None else data.pay_in,
        "pay_out": False if data.pay_out is None else data.pay_out,
        "lower_limit": data.lower_limit if data.lower_limit is not None else Decimal("0"),
        "upper_limit": data.upper_limit,
        "total_limit": data.total_limit,
        "turnover_limit_minutes": data.turnover_limit_minutes,
        "turnover_day_max": data.turnover_day_max,
        "max_concurrent_orders": data.max_concurrent_orders,
    }
    _check_limits(settings)
    if data.owner_id is not None:
        owner = session.get(OwnerOfRequisites, data.owner_id)
        if owner is None or owner.trader_id != trader.id:
            raise NotFound("holder not found")
    else:
        assert data.holder is not None
        owner = OwnerOfRequisites(trader_id=trader.id, **data.holder.model_dump())
        session.add(owner)
    ensure_number_free(session, number, trader_id=trader.id)
    req = ReqTrader(
        trader_id=trader.id,
        fiat_currency_id=fiat.id,
        payment_method_id=method.id,
        bank_id=bank.id,
        req_number=number,
        req_last4=last4(number),
        status=S.PENDING_REVIEW.value,
        distribution_weight=trader.trafic_priority,
    )
    req.owner = owner
    # A savepoint: a parallel registration of the same number, by any trader, loses at the
    # unique index with the same 409.
    with integrity_errors_as_domain_errors(
        session, {name: DuplicateObject(NUMBER_TAKEN) for name in _NUMBER_INDEXES}
    ):
        session.add(req)
        session.flush()
    session.add(FullRequisitesSettings(requisite_id=req.id, **settings))
    log_event(
        session,
        action="requisite.created",
        user_id=actor.user_id,
        target_entity="requisite",
        target_id=req.id,
        details={
            "fiat_currency": fiat.code,
            "payment_method": method.code,
            "bank": bank.code,
            "last4": req.req_last4,
            "owner_id": owner.id,
            "settings": settings,
        },
        ip_address=actor.ip_address,
    )
    session.flush()
    result: RequisiteRead = get_requisite(session, principal=principal, requisite_id=req.id)
    return result


# --------------------------------------------------------------------------- changes


def _lock(session: Session, principal: Principal, requisite_id: int) -> ReqTrader:
    req = session.scalars(
        select(ReqTrader)
        .where(ReqTrader.id == requisite_id, requisites_visible_to(principal))
        .with_for_update(of=ReqTrader)
    ).first()
    if req is None:
        raise NotFound("requisite not found")
    return req


def update_settings(
    session: Session,
    *,
    principal: Principal,
    requisite_id: int,
    changes: RequisiteSettingsFields,
    actor: Actor,
) -> bool:
    """Apply the fields sent in `changes` (and the staff exclusion switch); True if any changed."""
    req = _lock(session, principal, requisite_id)
    if req.status == S.ARCHIVED:
        raise Conflict("an archived requisite cannot be changed", code="requisite_archived")
    settings = session.scalars(
        select(FullRequisitesSettings).where(FullRequisitesSettings.requisite_id == req.id)
    ).one()
    sent = changes.model_dump(include=changes.model_fields_set)
    reason = sent.pop("reason", None)
    for name, value in sent.items():
        if value is None and name not in _NULLABLE_SETTINGS:
            raise ValidationFailed(f"{name} cannot be null", code="validation_failed")
    old = {name: getattr(settings, name) for name in _SETTINGS_FIELDS}
    new = {**old, **{k: v for k, v in sent.items() if k in _SETTINGS_FIELDS}}
    _check_limits(new)
    diff = {k: {"from": old[k], "to": new[k]} for k in _SETTINGS_FIELDS if old[k] != new[k]}
    excluded = sent.get("is_excluded_from_distribution")
    if excluded is not None and excluded != req.is_excluded_from_distribution:
        diff["is_excluded_from_distribution"] = {
            "from": req.is_excluded_from_distribution,
            "to": excluded,
        }
        req.is_excluded_from_distribution = excluded
    if not diff:
        return False
    for name in _SETTINGS_FIELDS:
        setattr(settings, name, new[name])
    log_event(
        session,
        action="requisite.settings_changed",
        user_id=actor.user_id,
        target_entity="requisite",
        target_id=req.id,
        details={"changes": diff, "reason": reason, "by_role": principal.role.value},
        ip_address=actor.ip_address,
    )
    session.flush()
    return True


def set_status(
    session: Session,
    *,
    principal: Principal,
    requisite_id: int,
    status: RequisiteStatus,
    reason: str | None,
    actor: Actor,
) -> bool:
    """Move a requisite along the moderation table; False for a repeat, 409 if not allowed."""
    req = _lock(session, principal, requisite_id)
    current = RequisiteStatus(req.status)
    if current == status:
        return False
    if status not in TRANSITIONS[current]:
        raise InvalidStatusTransition(f"a requisite cannot go from {current} to {status}")
    req.status = status.value
    log_event(
        session,
        action="requisite.status_changed",
        user_id=actor.user_id,
        target_entity="requisite",
        target_id=req.id,
        details={
            "from": current.value,
            "to": status.value,
            "reason": reason,
            "open_orders": req.open_orders,
            "by_role": principal.role.value,
        },
        ip_address=actor.ip_address,
    )
    session.flush()
    return True
