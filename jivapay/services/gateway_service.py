"""The public gateway's business logic (docs/lifecycle.md, intake): order intake, order status for the
store, and the store's and payer's actions on an order.

Intake validates everything before it writes anything, in this order: the store's switches (access,
traffic, direction), the currency, the amount (places, sign, store limits), required parameters,
method/bank codes, the PayOut beneficiary, a fresh exchange rate, the converted crypto amount and a
PayOut's hold within NUMERIC(20, 8) (`amount_out_of_range`: the store's limits bound the fiat
amount only), the store commission. It then fixes
the rate and the commission on a new `incoming_orders` row (`new`, `next_attempt_at` = its creation
time, which the scheduler's sweeper relies on), freezes a PayOut's `C + C*s` on the store's balance
(after the insert: the history row references the order), writes an audit row and announces the
order to the workers (`intake_queue`: sent after the commit only). Any refusal raises before the
caller commits, so a 4xx writes nothing.

Decisions:
- `gateway_require_amount_param`: intake always requires the store to give the amount (there is no
  flow where the payer chooses it), so the flag is satisfied by every accepted request and changes
  nothing yet; `gateway_require_customer_id_param` makes `customer_id` mandatory.
- A store's cancel of an order still at intake (`new`, `retrying`, `manual_review`) closes it as
  `failed` with the reason "canceled by store" (`order_processor.fail_incoming`, which releases a
  PayOut's hold), under a row lock taken before the status is re-checked. An assigned order is
  canceled through the state machine.
- The store sees a PayIn's requisite (full number) while the order is open (pending, paid,
  disputed), not after it closed; a failed order shows only the code of its failure reason.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from pydantic import Field
from sqlalchemy import Table, bindparam, exists, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from jivapay.config import get_settings
from jivapay.database.base import utcnow
from jivapay.database.models import (
    AvailableBankMethod,
    Bank,
    CryptoCurrency,
    FiatCurrency,
    IncomingOrder,
    MerchantStore,
    OrderHistory,
    OwnerOfRequisites,
    PaymentMethod,
    ReqTrader,
    StoreCommission,
)
from jivapay.database.types import last4, mask_number
from jivapay.database.utils import integrity_errors_as_domain_errors
from jivapay.enums import IncomingOrderStatus, MerchantOrderStatus, OrderStatus, OrderType
from jivapay.money import (
    MAX_CRYPTO,
    commission,
    crypto_to_fiat,
    fiat_to_crypto,
    parse_crypto_amount,
    parse_fiat_amount,
    payout_store_hold,
)
from jivapay.schemas.gateway import (
    BeneficiaryRead,
    IntakeRead,
    MethodBanksRead,
    NamedRef,
    OrderStatusRead,
    PayerConfirmRead,
    PayInCreate,
    PayOutCreate,
    ReferenceMethodsRead,
    RequisiteRead,
)
from jivapay.security import StorePrincipal
from jivapay.services import (
    balance_manager,
    document_service,
    fraud_detector,
    idempotency,
    intake_queue,
    order_status_manager,
    reference_data,
)
from jivapay.services.audit_logger import audit_cte, audit_parameters
from jivapay.services.document_service import FileUpload
from jivapay.services.order_processor import fail_incoming
from jivapay.services.order_status_manager import Actor, ActorKind
from jivapay.utils.exceptions import (
    ConfigurationError,
    DuplicateObject,
    Forbidden,
    InvalidStatusTransition,
    NotFound,
    ValidationFailed,
)

CANCELED_BY_STORE = "canceled by store"
_AT_INTAKE = frozenset(
    {IncomingOrderStatus.NEW, IncomingOrderStatus.RETRYING, IncomingOrderStatus.MANUAL_REVIEW}
)
# The statuses whose PayIn status shows the requisite; a pending one only before its payment
# deadline (after it, as once expired, no one is to pay to it).
_SHOW_REQUISITE = frozenset({OrderStatus.PENDING, OrderStatus.PAID, OrderStatus.DISPUTED})
_BENEFICIARY_DIGITS = (12, 19)


# --------------------------------------------------------------------------- results


class IntakeResult(IntakeRead):
    """The 201 body of intake, plus the intake row's id for the caller (never serialised)."""

    incoming_id: int = Field(exclude=True)


# --------------------------------------------------------------------------- intake checks


_STORES = cast(Table, MerchantStore.__table__)
_COMMISSIONS = cast(Table, StoreCommission.__table__)


def _latest_commission(name: str) -> Any:
    # The newest commission row applies; a scalar subquery correlated to the store's row.
    return (
        select(_COMMISSIONS.c[name])
        .where(_COMMISSIONS.c.store_id == _STORES.c.id)
        .order_by(_COMMISSIONS.c.created_at.desc(), _COMMISSIONS.c.id.desc())
        .limit(1)
        .scalar_subquery()
        .label(name)
    )


def _currency_active(model: type[FiatCurrency] | type[CryptoCurrency], name: str) -> Any:
    # Whether the store's currency is still active: read with the store (an admin may deactivate
    # it at any time), in the same statement, so intake costs no extra round trip for it.
    table = cast(Table, model.__table__)
    column = _STORES.c.fiat_currency_id if model is FiatCurrency else _STORES.c.crypto_currency_id
    return select(table.c.is_active).where(table.c.id == column).scalar_subquery().label(name)


@dataclass(frozen=True)
class IntakeTerms:
    """What intake reads of its store: switches, currencies (and whether each is still active),
    limits and the current commissions (None: the store has no commission row)."""

    id: int
    access: bool
    trafic_access: bool
    pay_in_enabled: bool
    pay_out_enabled: bool
    fiat_currency_id: int
    crypto_currency_id: int
    lower_limit: Decimal
    upper_limit: Decimal
    gateway_require_customer_id_param: bool
    fiat_active: bool
    crypto_active: bool
    commission_payin: Decimal | None
    commission_payout: Decimal | None


# Read in the statement that authenticates an intake request (`verify_store_request(columns=...)`,
# see `api_routers/gateway/routes.py`), so intake does not read its store a second time; a caller
# that gives a bare store id reads them by id (`_TERMS_BY_ID`).
INTAKE_TERMS = (
    *(
        _STORES.c[name]
        for name in (
            "trafic_access",
            "pay_in_enabled",
            "pay_out_enabled",
            "fiat_currency_id",
            "crypto_currency_id",
            "lower_limit",
            "upper_limit",
            "gateway_require_customer_id_param",
        )
    ),
    _currency_active(FiatCurrency, "fiat_active"),
    _currency_active(CryptoCurrency, "crypto_active"),
    _latest_commission("commission_payin"),
    _latest_commission("commission_payout"),
)
_TERM_NAMES = frozenset(column.key for column in INTAKE_TERMS)
_TERMS_BY_ID = select(_STORES.c.id, _STORES.c.access, *INTAKE_TERMS).where(
    _STORES.c.id == bindparam("store_id")
)


def _intake_terms(session: Session, store: StorePrincipal | int) -> IntakeTerms:
    if isinstance(store, StorePrincipal) and store.loaded.keys() >= _TERM_NAMES:
        # The authentication refused a store without access in the same statement.
        return IntakeTerms(
            id=store.store_id, access=True, **{name: store.loaded[name] for name in _TERM_NAMES}
        )
    store_id = store.store_id if isinstance(store, StorePrincipal) else int(store)
    row = session.execute(_TERMS_BY_ID, {"store_id": store_id}).first()
    if row is None:
        raise NotFound("store not found")
    return IntakeTerms(**row._mapping)


def _usable_store(store: IntakeTerms, order_type: OrderType) -> IntakeTerms:
    if not store.access:
        raise Forbidden("Store access is disabled", code="store_access_denied")
    if not store.trafic_access:
        raise Forbidden("Traffic is disabled for this store", code="store_traffic_disabled")
    enabled = store.pay_in_enabled if order_type == OrderType.PAYIN else store.pay_out_enabled
    if not enabled:
        raise Forbidden(f"{order_type.value} is disabled for this store", code="direction_disabled")
    return store


def _check_currency(session: Session, store: IntakeTerms, code: str) -> None:
    # The store's own code is cached per process: a matching request needs no query at all.
    # A deactivated currency (reference rows are deactivated, never deleted) takes no new
    # orders: refused like an unknown one, as store creation and requisite registration do.
    wanted = code.upper()
    if reference_data.currency_code(session, FiatCurrency, store.fiat_currency_id) == wanted:
        if not store.fiat_active:
            raise ValidationFailed(
                f"fiat currency {wanted} is deactivated: it takes no new orders",
                code="unknown_currency",
            )
        if not store.crypto_active:
            crypto = reference_data.currency_code(session, CryptoCurrency, store.crypto_currency_id)
            raise ValidationFailed(
                f"this store's crypto currency {crypto} is deactivated: it takes no new orders",
                code="unknown_currency",
            )
        return
    known = session.scalar(
        select(FiatCurrency.id).where(FiatCurrency.code == wanted, FiatCurrency.is_active)
    )
    if known is None:
        raise ValidationFailed(f"unknown fiat currency {code!r}", code="unknown_currency")
    raise ValidationFailed(
        f"this store works in another fiat currency, not {wanted}", code="currency_mismatch"
    )


def _check_limits(store: IntakeTerms, amount_fiat: Decimal) -> None:
    if not store.lower_limit <= amount_fiat <= store.upper_limit:
        raise ValidationFailed(
            f"amount_fiat must be between {store.lower_limit} and {store.upper_limit}",
            code="amount_out_of_limits",
            extra={"lower_limit": str(store.lower_limit), "upper_limit": str(store.upper_limit)},
        )


def _check_crypto_range(amount: Decimal, what: str) -> None:
    # The store's limits bound the fiat amount only: at a low rate C = F / R (or a PayOut's
    # C + C*s) can outgrow NUMERIC(20, 8), which the insert would refuse with a generic error.
    if amount > MAX_CRYPTO:
        raise ValidationFailed(
            f"{what} is too large: {amount} exceeds {MAX_CRYPTO}",
            code="amount_out_of_range",
            extra={"max_amount_crypto": str(MAX_CRYPTO)},
        )


def _check_required_params(store: IntakeTerms, data: PayInCreate | PayOutCreate) -> None:
    if store.gateway_require_customer_id_param and not data.customer_id:
        raise ValidationFailed(
            "customer_id is required for this store", code="customer_id_required"
        )


def _lookup_codes(
    session: Session, fiat_id: int, method_code: str | None, bank_code: str | None
) -> tuple[PaymentMethod | None, Bank | None]:
    method = bank = None
    if method_code is not None:
        method = session.scalars(
            select(PaymentMethod).where(
                PaymentMethod.code == method_code, PaymentMethod.is_active.is_(True)
            )
        ).first()
        if method is None:
            raise ValidationFailed(
                f"unknown payment method {method_code!r}", code="unknown_payment_method"
            )
    if bank_code is not None:
        bank = session.scalars(
            select(Bank).where(Bank.code == bank_code, Bank.is_active.is_(True))
        ).first()
        if bank is None:
            raise ValidationFailed(f"unknown bank {bank_code!r}", code="unknown_bank")
    if method is not None or bank is not None:
        # A combination no requisite can ever serve would only fail after every retry: refuse now.
        available = select(AvailableBankMethod.id).where(
            AvailableBankMethod.fiat_currency_id == fiat_id,
            AvailableBankMethod.is_active.is_(True),
        )
        if method is not None:
            available = available.where(AvailableBankMethod.payment_method_id == method.id)
        if bank is not None:
            available = available.where(AvailableBankMethod.bank_id == bank.id)
        if not session.scalar(select(exists(available))):
            raise ValidationFailed(
                "this payment method / bank is not available in the store's currency",
                code="method_not_available",
            )
    return method, bank


def _beneficiary_number(raw: str) -> str:
    number = raw.replace(" ", "").replace("-", "")
    low, high = _BENEFICIARY_DIGITS
    if not number.isascii() or not number.isdigit() or not low <= len(number) <= high:
        raise ValidationFailed(
            f"beneficiary.number must have {low} to {high} digits", code="invalid_beneficiary"
        )
    return number


def _fresh_rate(session: Session, store: IntakeTerms, now: datetime) -> Decimal:
    return reference_data.get_fresh_exchange_rate(
        session,
        crypto_currency_id=store.crypto_currency_id,
        fiat_currency_id=store.fiat_currency_id,
        now=now,
    ).median_rate


def _store_commission_percent(store: IntakeTerms, order_type: OrderType) -> Decimal:
    percent = store.commission_payin if order_type == OrderType.PAYIN else store.commission_payout
    if percent is None:
        raise ConfigurationError(f"store {store.id} has no commission row")
    return Decimal(percent)


# --------------------------------------------------------------------------- intake


@dataclass(frozen=True)
class _Priced:
    """The amounts intake fixes on the order: the rate, both amounts, the store commission."""

    rate: Decimal
    amount_fiat: Decimal
    amount_crypto: Decimal
    commission_percent: Decimal
    store_commission: Decimal
    store_hold: Decimal


def _requested_amounts(
    store: IntakeTerms, data: PayInCreate | PayOutCreate
) -> tuple[Decimal | None, Decimal | None]:
    """(fiat, crypto) as the store gave them: a PayIn gives fiat, a PayOut exactly one of them."""
    amount_fiat: Decimal | None = None
    amount_crypto: Decimal | None = None
    if isinstance(data, PayOutCreate):
        if (data.amount_fiat is None) == (data.amount_crypto is None):
            raise ValidationFailed("give exactly one of amount_fiat and amount_crypto")
        if data.amount_fiat is not None:
            amount_fiat = parse_fiat_amount(data.amount_fiat)
        else:
            amount_crypto = parse_crypto_amount(data.amount_crypto)
    else:
        amount_fiat = parse_fiat_amount(data.amount_fiat)
    if amount_fiat is not None:
        _check_limits(store, amount_fiat)
    return amount_fiat, amount_crypto


def _payout_beneficiary(
    data: PayInCreate | PayOutCreate, method: PaymentMethod | None, bank: Bank | None
) -> str | None:
    """A PayOut's normalised beneficiary number (method and bank required); None for a PayIn."""
    if not isinstance(data, PayOutCreate):
        return None
    if method is None or bank is None:
        raise ValidationFailed("a PayOut requires payment_method and bank")
    if data.beneficiary is None:
        raise ValidationFailed("a PayOut requires a beneficiary {number, name}")
    return _beneficiary_number(data.beneficiary.number)


def _price(
    session: Session,
    store: IntakeTerms,
    order_type: OrderType,
    amounts: tuple[Decimal | None, Decimal | None],
    now: datetime,
) -> _Priced:
    """Convert at a fresh rate, check the limits in fiat, compute the commission and the hold."""
    amount_fiat, amount_crypto = amounts
    rate = _fresh_rate(session, store, now)
    if amount_crypto is None:
        assert amount_fiat is not None
        amount_crypto = fiat_to_crypto(amount_fiat, rate)
    else:
        amount_fiat = crypto_to_fiat(amount_crypto, rate)
        _check_limits(store, amount_fiat)
    if amount_crypto <= 0:
        raise ValidationFailed("the amount is too small at the current exchange rate")
    _check_crypto_range(amount_crypto, "the amount at the current exchange rate")
    percent = _store_commission_percent(store, order_type)
    store_commission = commission(amount_crypto, percent)
    hold = (
        payout_store_hold(amount_crypto, store_commission)
        if order_type == OrderType.PAYOUT
        else Decimal(0)
    )
    _check_crypto_range(hold, "the PayOut's hold (amount plus store commission)")
    return _Priced(rate, amount_fiat, amount_crypto, percent, store_commission, hold)


# Every column intake writes; the statement is built once (values are bound parameters).
_INTAKE_COLUMNS = (
    "public_id",
    "store_id",
    "order_type",
    "fiat_currency_id",
    "crypto_currency_id",
    "amount_fiat",
    "amount_crypto",
    "exchange_rate",
    "store_commission_rate",
    "store_commission",
    "store_hold",
    "merchant_order_id",
    "customer_id",
    "customer_ip",
    "return_url",
    "callback_url",
    "target_payment_method_id",
    "target_bank_id",
    "beneficiary_number",
    "beneficiary_last4",
    "beneficiary_name",
    "status",
    "retry_count",
    "next_attempt_at",
    "created_at",
    "updated_at",
)


def _intake_statement(*, with_key_row: bool) -> Executable:
    """The intake row's INSERT with its audit row (and the `Idempotency-Key`'s row, when the
    request has one to write) as data-modifying CTEs: one round trip, no ORM unit of work, on the
    table (its column types still encrypt the beneficiary number). The columns' Python-side
    defaults do not apply to it: every column is given."""
    table = cast(Table, IncomingOrder.__table__)
    statement = (
        insert(table).values({c: bindparam(c) for c in _INTAKE_COLUMNS}).add_cte(audit_cte())
    )
    if with_key_row:
        statement = statement.add_cte(idempotency.key_row_cte())
    return statement.returning(table.c.id)


_INTAKE = _intake_statement(with_key_row=False)
_INTAKE_WITH_KEY_ROW = _intake_statement(with_key_row=True)


def _intake_values(
    *,
    store: IntakeTerms,
    order_type: OrderType,
    data: PayInCreate | PayOutCreate,
    priced: _Priced,
    method: PaymentMethod | None,
    bank: Bank | None,
    beneficiary: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The `new` intake row's columns."""
    return {
        "public_id": "ord_" + secrets.token_urlsafe(18),
        "store_id": store.id,
        "order_type": order_type.value,
        "fiat_currency_id": store.fiat_currency_id,
        "crypto_currency_id": store.crypto_currency_id,
        "amount_fiat": priced.amount_fiat,
        "amount_crypto": priced.amount_crypto,
        "exchange_rate": priced.rate,
        "store_commission_rate": priced.commission_percent,
        "store_commission": priced.store_commission,
        "store_hold": priced.store_hold,
        "merchant_order_id": data.merchant_order_id,
        "customer_id": data.customer_id,
        "customer_ip": data.customer_ip,
        "return_url": data.return_url,
        "callback_url": data.callback_url,
        "target_payment_method_id": method.id if method else None,
        "target_bank_id": bank.id if bank else None,
        "beneficiary_number": beneficiary,
        "beneficiary_last4": last4(beneficiary) if beneficiary else None,
        "beneficiary_name": data.beneficiary.name
        if isinstance(data, PayOutCreate) and data.beneficiary
        else None,
        "status": IncomingOrderStatus.NEW.value,
        "retry_count": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _insert_incoming(
    session: Session,
    values: dict[str, Any],
    priced: _Priced,
    result: IntakeResult,
    ip_address: str | None,
) -> int:
    """Insert the intake row with its audit row, and with the `Idempotency-Key`'s row when the
    request has one (`result` is its answer); the new row's id. A merchant order id the store
    already used is a 409."""
    audit = audit_parameters(
        action="order.intake",
        target_entity="order",
        target_id=values["public_id"],
        details={
            "store_id": values["store_id"],
            "order_type": values["order_type"],
            "merchant_order_id": values["merchant_order_id"],
            "amount_fiat": priced.amount_fiat,
            "amount_crypto": priced.amount_crypto,
            "exchange_rate": priced.rate,
        },
        ip_address=ip_address,
    )
    duplicate = DuplicateObject(
        f"merchant_order_id {values['merchant_order_id']!r} was already used by this store",
        code="duplicate_merchant_order_id",
    )
    parameters = {**values, **audit}
    statement = _INTAKE
    key_row = idempotency.pending_key_row(session)
    if key_row is not None:
        parameters.update(key_row.parameters_with(result.model_dump(mode="json")))
        statement = _INTAKE_WITH_KEY_ROW
    conflicts = {
        "uq_incoming_orders_store_id_merchant_order_id": duplicate,
        **idempotency.key_conflicts(),
    }
    # No savepoint: a 409 ends the request's transaction, which rolls back whole.
    with integrity_errors_as_domain_errors(session, conflicts, savepoint=False):
        new_id: int = session.execute(statement, parameters).scalar_one()
    intake_queue.announce(session, new_id)
    return new_id


def _intake_result(
    session: Session, values: dict[str, Any], order_type: OrderType, priced: _Priced
) -> IntakeResult:
    """The 201 answer, before the row exists (`incoming_id` 0 until the insert returns it)."""
    public_id = values["public_id"]
    payment_url = None
    if order_type == OrderType.PAYIN:
        payment_url = f"{get_settings().PUBLIC_BASE_URL.rstrip('/')}/pay/{public_id}"
    return IntakeResult(
        incoming_id=0,
        order_id=public_id,
        merchant_order_id=values["merchant_order_id"],
        order_type=order_type,
        status=IncomingOrderStatus.NEW,
        amount_fiat=priced.amount_fiat,
        fiat_currency=_currency(session, FiatCurrency, values["fiat_currency_id"]),
        amount_crypto=priced.amount_crypto,
        crypto_currency=_currency(session, CryptoCurrency, values["crypto_currency_id"]),
        exchange_rate=priced.rate,
        store_commission=priced.store_commission,
        payment_url=payment_url,
        created_at=values["created_at"],
    )


def _intake(
    session: Session,
    *,
    store: StorePrincipal | int,
    order_type: OrderType,
    data: PayInCreate | PayOutCreate,
    now: datetime | None,
    ip_address: str | None,
) -> IntakeResult:
    # Every check runs before the first write, so a refusal leaves nothing behind.
    now = now or utcnow()
    terms = _usable_store(_intake_terms(session, store), order_type)
    _check_currency(session, terms, data.fiat_currency)
    _check_required_params(terms, data)
    amounts = _requested_amounts(terms, data)
    method, bank = _lookup_codes(session, terms.fiat_currency_id, data.payment_method, data.bank)
    beneficiary = _payout_beneficiary(data, method, bank)
    priced = _price(session, terms, order_type, amounts, now)

    values = _intake_values(
        store=terms,
        order_type=order_type,
        data=data,
        priced=priced,
        method=method,
        bank=bank,
        beneficiary=beneficiary,
        now=now,
    )
    result = _intake_result(session, values, order_type, priced)
    incoming_id = _insert_incoming(session, values, priced, result, ip_address)
    if priced.store_hold > 0:
        # After the insert: the balance history row references the order.
        balance_manager.freeze_store_hold(
            session,
            store_id=terms.id,
            crypto_currency_id=terms.crypto_currency_id,
            amount=priced.store_hold,
            incoming_order_id=incoming_id,
        )
    return result.model_copy(update={"incoming_id": incoming_id})


def create_payin(
    session: Session,
    *,
    store: StorePrincipal | int,
    data: PayInCreate,
    now: datetime | None = None,
    ip_address: str | None = None,
) -> IntakeResult:
    """Validate and record a PayIn at intake, announced to the workers on commit
    (`ip_address`: the store's client address, for the audit row)."""
    return _intake(
        session,
        store=store,
        order_type=OrderType.PAYIN,
        data=data,
        now=now,
        ip_address=ip_address,
    )


def create_payout(
    session: Session,
    *,
    store: StorePrincipal | int,
    data: PayOutCreate,
    now: datetime | None = None,
    ip_address: str | None = None,
) -> IntakeResult:
    """Validate and record a PayOut at intake, freezing `C + C*s` on the store's balance
    (`ip_address`: the store's client address, for the audit row)."""
    return _intake(
        session,
        store=store,
        order_type=OrderType.PAYOUT,
        data=data,
        now=now,
        ip_address=ip_address,
    )


# --------------------------------------------------------------------------- status


def _find_incoming(
    session: Session, *, store_id: int, public_id: str, order_type: OrderType | None = None
) -> IncomingOrder:
    stmt = select(IncomingOrder).where(
        IncomingOrder.public_id == public_id, IncomingOrder.store_id == store_id
    )
    if order_type is not None:
        stmt = stmt.where(IncomingOrder.order_type == OrderType(order_type).value)
    incoming = session.scalars(stmt).first()
    if incoming is None:
        raise NotFound("order not found")
    return incoming


def _ref(obj: Any) -> NamedRef | None:
    return None if obj is None else NamedRef(code=obj.code, name=obj.name)


def _currency(session: Session, model: type[FiatCurrency] | type[CryptoCurrency], id_: int) -> str:
    return reference_data.currency_code(session, model, id_) or ""


def public_failure_reason(reason: str | None) -> str | None:
    """What a merchant is told of an intake failure: the reason's code, never its internal detail."""
    return _public_failure(reason)


def _public_failure(reason: str | None) -> str | None:
    # Failure texts can carry internal detail (trader ids, limits); the store gets the code only.
    if reason is None or reason.startswith(CANCELED_BY_STORE):
        return reason
    return reason.split(":", 1)[0].strip() or None


def _requisite_view(session: Session, order: OrderHistory) -> RequisiteRead:
    requisite = session.get(ReqTrader, order.requisite_id)
    assert requisite is not None
    owner = session.get(OwnerOfRequisites, requisite.owner_id)
    bank = _ref(session.get(Bank, order.bank_id))
    method = _ref(session.get(PaymentMethod, order.payment_method_id))
    assert bank is not None and method is not None
    return RequisiteRead(
        bank=bank,
        payment_method=method,
        number=requisite.req_number,
        holder_name=owner.full_name if owner else "",
    )


def _beneficiary_view(session: Session, incoming: IncomingOrder) -> BeneficiaryRead | None:
    if incoming.beneficiary_last4 is None:
        return None
    bank = session.get(Bank, incoming.target_bank_id) if incoming.target_bank_id else None
    method = (
        session.get(PaymentMethod, incoming.target_payment_method_id)
        if incoming.target_payment_method_id
        else None
    )
    return BeneficiaryRead(
        number_masked=mask_number(incoming.beneficiary_last4) or "",
        last4=incoming.beneficiary_last4,
        name=incoming.beneficiary_name,
        bank=_ref(bank),
        payment_method=_ref(method),
    )


def _status_view(session: Session, incoming: IncomingOrder) -> OrderStatusRead:
    order = session.scalars(
        select(OrderHistory).where(OrderHistory.incoming_order_id == incoming.id)
    ).first()
    order_type = OrderType(incoming.order_type)
    requisite = None
    if (
        order is not None
        and order_type == OrderType.PAYIN
        and order.status in _SHOW_REQUISITE
        and not order_status_manager.payment_time_up(order)  # not to be paid any more
    ):
        requisite = _requisite_view(session, order)
    return OrderStatusRead(
        order_id=incoming.public_id,
        merchant_order_id=incoming.merchant_order_id,
        order_type=order_type,
        status=MerchantOrderStatus(order.status if order is not None else incoming.status),
        amount_fiat=incoming.amount_fiat,
        fiat_currency=_currency(session, FiatCurrency, incoming.fiat_currency_id),
        amount_crypto=incoming.amount_crypto,
        crypto_currency=_currency(session, CryptoCurrency, incoming.crypto_currency_id),
        exchange_rate=incoming.exchange_rate,
        store_commission=incoming.store_commission,
        created_at=incoming.created_at,
        updated_at=max(incoming.updated_at, order.updated_at) if order else incoming.updated_at,
        expires_at=order.expires_at if order else None,
        completed_at=order.completed_at if order else None,
        failure_reason=_public_failure(incoming.failure_reason) if order is None else None,
        cancellation_reason=order.cancellation_reason if order else None,
        requisite=requisite,
        beneficiary=_beneficiary_view(session, incoming)
        if order_type == OrderType.PAYOUT
        else None,
        receipts=document_service.document_views(session, order_id=order.id) if order else [],
    )


def get_order_status(
    session: Session, *, store_id: int, public_id: str, order_type: OrderType | None
) -> OrderStatusRead:
    """The store's view of its order; another store's order or another type is 404."""
    incoming = _find_incoming(
        session, store_id=store_id, public_id=public_id, order_type=order_type
    )
    return _status_view(session, incoming)


# --------------------------------------------------------------------------- actions


def _merchant(store_id: int, user_id: int | None = None, ip_address: str | None = None) -> Actor:
    # `user_id`: the merchant's login when it acts through the merchant API (for the audit row).
    return Actor(kind=ActorKind.MERCHANT, store_id=store_id, user_id=user_id, ip_address=ip_address)


def _lock_incoming(session: Session, incoming_id: int) -> IncomingOrder:
    # FOR NO KEY UPDATE: the state machine inserts rows referencing this one (FOR KEY SHARE) while
    # it holds the order row; a full FOR UPDATE here could deadlock with it.
    stmt = (
        select(IncomingOrder)
        .where(IncomingOrder.id == incoming_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one()


def cancel_by_store(
    session: Session,
    *,
    store_id: int,
    public_id: str,
    reason: str | None = None,
    now: datetime | None = None,
    user_id: int | None = None,
    ip_address: str | None = None,
) -> OrderStatusRead:
    """The store cancels its order: at intake it fails it (hold released), else state machine.
    `ip_address`: the requesting client's, recorded in the audit row."""
    incoming = _find_incoming(session, store_id=store_id, public_id=public_id)
    if incoming.status != IncomingOrderStatus.ASSIGNED:
        incoming = _lock_incoming(session, incoming.id)
        status = IncomingOrderStatus(incoming.status)
        if status in _AT_INTAKE:
            text = f"{CANCELED_BY_STORE}: {reason}" if reason else CANCELED_BY_STORE
            fail_incoming(
                session,
                incoming=incoming,
                reason=text,
                now=now or utcnow(),
                previous=status.value,
                ip_address=ip_address,
            )
            session.flush()
            return _status_view(session, incoming)
        if status == IncomingOrderStatus.FAILED:
            if (incoming.failure_reason or "").startswith(CANCELED_BY_STORE):
                return _status_view(session, incoming)
            raise InvalidStatusTransition(
                "the order has already failed", extra={"current_status": status.value}
            )
        # Assigned while we waited for the lock: cancel the order itself.
    order_status_manager.cancel_order(
        session,
        public_id=public_id,
        actor=_merchant(store_id, user_id, ip_address),
        reason=reason or CANCELED_BY_STORE,
    )
    return _status_view(session, incoming)


def dispute_by_store(
    session: Session,
    *,
    store_id: int,
    public_id: str,
    reason: str | None = None,
    evidence: Sequence[FileUpload] = (),
    user_id: int | None = None,
    ip_address: str | None = None,
) -> OrderStatusRead:
    """The store opens a dispute on its pending or paid order, with optional evidence files;
    `ip_address`: the requesting client's, recorded in the audit rows."""
    incoming = _find_incoming(session, store_id=store_id, public_id=public_id)
    if incoming.status != IncomingOrderStatus.ASSIGNED:
        raise InvalidStatusTransition(
            f"cannot dispute an order that is {incoming.status}",
            extra={"current_status": incoming.status},
        )
    document_service.dispute_with_evidence(
        session,
        public_id=public_id,
        actor=_merchant(store_id, user_id, ip_address),
        reason=reason,
        evidence=evidence,
    )
    return _status_view(session, incoming)


def confirm_by_payer(
    session: Session,
    *,
    public_id: str,
    receipt: FileUpload | None = None,
    ip_address: str | None = None,
) -> PayerConfirmRead:
    """The payer says the PayIn is paid, with the receipt the store may require; `ip_address`:
    the payer's, recorded in the audit rows."""
    # Only a PayIn can be confirmed by its payer: any other id is 404 before anything runs.
    order = session.scalars(
        select(OrderHistory).where(
            OrderHistory.public_id == public_id,
            OrderHistory.order_type == OrderType.PAYIN.value,
        )
    ).first()
    if order is None:
        incoming = session.scalars(
            select(IncomingOrder).where(
                IncomingOrder.public_id == public_id,
                IncomingOrder.order_type == OrderType.PAYIN.value,
            )
        ).first()
        if incoming is None:
            raise NotFound("order not found")
        raise InvalidStatusTransition(
            "the order has no payment details yet", extra={"current_status": incoming.status}
        )
    # Refused before the fraud check (which could turn it into a dispute) when the payment deadline
    # passed or the order is closed; checked again under the row lock by the transition.
    order_status_manager.check_transition(
        order, event=order_status_manager.OrderEvent.PAYER_CONFIRM, actor=order_status_manager.PAYER
    )
    store = session.get(MerchantStore, order.store_id)
    decision = fraud_detector.screen_payer_confirmation(
        session, public_id=public_id, ip_address=ip_address
    )
    result = document_service.payer_confirm_with_receipt(
        session,
        public_id=public_id,
        receipt=receipt,
        required=bool(store and store.require_payer_receipt),
        dispute_reason=f"fraud check: {decision.rule}" if decision is not None else None,
        ip_address=ip_address,
    )
    return PayerConfirmRead(order_id=result.public_id, status=result.status)


# --------------------------------------------------------------------------- reference


def list_methods(session: Session, *, store_id: int) -> ReferenceMethodsRead:
    """Payment methods, each with its banks, available in the store's fiat currency."""
    store = session.get(MerchantStore, store_id)
    if store is None:
        raise NotFound("store not found")
    fiat = session.get(FiatCurrency, store.fiat_currency_id)
    rows = session.execute(
        select(PaymentMethod.code, PaymentMethod.name, Bank.code, Bank.name)
        .join(AvailableBankMethod, AvailableBankMethod.payment_method_id == PaymentMethod.id)
        .join(Bank, Bank.id == AvailableBankMethod.bank_id)
        .where(
            AvailableBankMethod.fiat_currency_id == store.fiat_currency_id,
            AvailableBankMethod.is_active.is_(True),
            PaymentMethod.is_active.is_(True),
            Bank.is_active.is_(True),
        )
        .order_by(PaymentMethod.code, Bank.code)
    ).all()
    grouped: dict[str, MethodBanksRead] = {}
    for method_code, method_name, bank_code, bank_name in rows:
        entry = grouped.get(method_code)
        if entry is None:
            method = NamedRef(code=method_code, name=method_name)
            entry = grouped[method_code] = MethodBanksRead(payment_method=method, banks=[])
        entry.banks.append(NamedRef(code=bank_code, name=bank_name))
    return ReferenceMethodsRead(
        fiat_currency=fiat.code if fiat else "", methods=list(grouped.values())
    )
