"""Data-subject requests (GDPR): the export of everything stored about a person, the anonymisation of
a person, and the removal of a store customer's (payer's) data from closed orders.

The export holds the account and profile, a trader's requisites, holders and commissions or a
merchant's stores, the balances with their history (every deposit, withdrawal, hold, payin and
adjustment), the orders, and the person's audit rows: those they wrote and those staff wrote about
them (`_audit_scope`, the same rows anonymising scrubs). Money is exact strings, times ISO 8601;
each log (balance history, audit) is cut to its newest rows, as the export is one response.

Anonymising keeps every order, balance and history row (the books must still reconcile) and
replaces what identifies the person: email, names, requisite holders' names and numbers (the last 4
digits stay, as everywhere on screen), and the person's email, names and numbers inside audit
details. It is refused (409) while the person has open orders or frozen money, so no money in
flight loses its owner; requisites (trader) or stores (merchant) are locked first, so nothing new
can be assigned to them while the check runs. A repeat answers `changed: false`.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, String, Text, cast, func, or_, select, update
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import (
    AuditLog,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    BalanceTraderFiat,
    BalanceTraderFiatHistory,
    CallbackDelivery,
    CryptoCurrency,
    FiatCurrency,
    IncomingOrder,
    Merchant,
    MerchantStore,
    OrderHistory,
    OwnerOfRequisites,
    ReqTrader,
    StoreCommission,
    TeamLead,
    Trader,
    TraderCommission,
    User,
)
from jivapay.database.types import mask_number
from jivapay.enums import IncomingOrderStatus, OrderStatus, RequisiteStatus, Role
from jivapay.permissions import ensure_permission
from jivapay.schemas.admin import AnonymizeRead, CustomerAnonymizeRead
from jivapay.security import (
    Principal,
    generate_api_key_pair,
    generate_callback_secret,
    hash_password,
    revoke_tokens,
)
from jivapay.services import permission_service
from jivapay.services.audit_logger import log_event
from jivapay.services.user_admin import (
    ensure_not_last_superuser,
    load_user,
    lock_superusers,
    profile_of,
    user_detail,
    user_grants,
)
from jivapay.utils.exceptions import Conflict, NotFound

OPEN_ORDER_STATUSES = (OrderStatus.PENDING, OrderStatus.PAID, OrderStatus.DISPUTED)
OPEN_INTAKE_STATUSES = (
    IncomingOrderStatus.NEW,
    IncomingOrderStatus.RETRYING,
    IncomingOrderStatus.MANUAL_REVIEW,
)
ANONYMIZED = "[anonymized]"
EXPORT_AUDIT_LIMIT = 10_000
EXPORT_HISTORY_LIMIT = 10_000  # per history table, newest first, as the audit rows
_TEXT = Text()


def _plain(value: Any) -> Any:
    """JSON-ready copy: Decimals as exact strings (never floats), times as ISO 8601."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _columns(row: Any, *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in skip}


def _about(entities: tuple[str, ...], id_column: Any, where: Any) -> ColumnElement[bool]:
    """Audit rows whose target is one of `entities` with an id of a row `where` selects."""
    ids = select(cast(id_column, String)).where(where)  # target ids are stored as strings
    return AuditLog.target_entity.in_(entities) & AuditLog.target_id.in_(ids)


def _audit_scope(user: User, profile: Any) -> ColumnElement[bool]:
    """The person's audit rows: those they wrote, and those about them (their account, profile,
    requisites or stores, and balances) whoever wrote them, e.g. staff changing their account or
    depositing to them. The export returns exactly these rows; anonymising scrubs names in them."""
    about: list[ColumnElement[bool]] = [
        (AuditLog.target_entity == "user") & (AuditLog.target_id == str(user.id))
    ]
    if isinstance(profile, Trader):
        about += [
            (AuditLog.target_entity == "trader") & (AuditLog.target_id == str(profile.id)),
            _about(("requisite", "req_traders"), ReqTrader.id, ReqTrader.trader_id == profile.id),
            _about(("balance_trader",), BalanceTrader.id, BalanceTrader.trader_id == profile.id),
        ]
    elif isinstance(profile, Merchant):
        mine = MerchantStore.merchant_id == profile.id
        stores = select(MerchantStore.id).where(mine)
        about += [
            # "store": the rows of a customer anonymised in one of the merchant's stores.
            _about(("merchant_store", "store"), MerchantStore.id, mine),
            _about(("balance_store",), BalanceStore.id, BalanceStore.store_id.in_(stores)),
        ]
    return or_(AuditLog.user_id == user.id, *about)


# --------------------------------------------------------------------------- export


def _codes(session: Session) -> tuple[dict[int, str], dict[int, str]]:
    cryptos = {i: c for i, c in session.execute(select(CryptoCurrency.id, CryptoCurrency.code))}
    fiats = {i: c for i, c in session.execute(select(FiatCurrency.id, FiatCurrency.code))}
    return cryptos, fiats


def _order_rows(session: Session, where: Any) -> list[dict[str, Any]]:
    rows = session.scalars(select(OrderHistory).where(where).order_by(OrderHistory.id)).all()
    keep = (
        "public_id",
        "order_type",
        "status",
        "amount_fiat",
        "amount_crypto",
        "exchange_rate",
        "store_id",
        "trader_id",
        "requisite_id",
        "created_at",
        "completed_at",
        "canceled_at",
    )
    return [{k: getattr(o, k) for k in keep} for o in rows]


def _history_rows(
    session: Session, account_id: Any, account: Any, where: Any, label: Any
) -> list[dict[str, Any]]:
    """The newest movements (at most EXPORT_HISTORY_LIMIT) of the balances `where` selects; each
    row names its balance by `label(balance)` (currency, store) instead of the balance's row id."""
    history = account_id.class_
    rows = session.execute(
        select(history, account)
        .join(account, account.id == account_id)
        .where(where)
        .order_by(history.created_at.desc(), history.id.desc())  # the account_created index
        .limit(EXPORT_HISTORY_LIMIT)
    ).all()
    return [{**label(b), **_columns(h, skip=frozenset({account_id.key}))} for h, b in rows]


def _trader_part(session: Session, trader: Trader) -> dict[str, Any]:
    cryptos, fiats = _codes(session)
    requisites = session.scalars(
        select(ReqTrader).where(ReqTrader.trader_id == trader.id).order_by(ReqTrader.id)
    ).all()
    owners = session.scalars(
        select(OwnerOfRequisites).where(OwnerOfRequisites.trader_id == trader.id)
    ).all()
    commissions = session.scalars(
        select(TraderCommission).where(TraderCommission.trader_id == trader.id)
    ).all()
    return {
        "commissions": [_columns(c, skip=frozenset({"trader_id"})) for c in commissions],
        "requisites": [
            {
                "id": r.id,
                "owner_id": r.owner_id,
                "fiat": fiats.get(r.fiat_currency_id),
                "payment_method_id": r.payment_method_id,
                "bank_id": r.bank_id,
                "number_masked": mask_number(r.req_last4),
                "status": r.status,
                "created_at": r.created_at,
            }
            for r in requisites
        ],
        "owners": [_columns(o, skip=frozenset({"trader_id"})) for o in owners],
        "balances": [
            {"crypto": cryptos.get(b.crypto_currency_id), "balance": b.balance, "frozen": b.frozen}
            for b in session.scalars(
                select(BalanceTrader).where(BalanceTrader.trader_id == trader.id)
            )
        ],
        "fiat_turnover": [
            {"fiat": fiats.get(b.fiat_currency_id), "balance": b.balance}
            for b in session.scalars(
                select(BalanceTraderFiat).where(BalanceTraderFiat.trader_id == trader.id)
            )
        ],
        "balance_history": _history_rows(
            session,
            BalanceTraderCryptoHistory.balance_trader_id,
            BalanceTrader,
            BalanceTrader.trader_id == trader.id,
            lambda b: {"crypto": cryptos.get(b.crypto_currency_id)},
        ),
        "fiat_turnover_history": _history_rows(
            session,
            BalanceTraderFiatHistory.balance_trader_fiat_id,
            BalanceTraderFiat,
            BalanceTraderFiat.trader_id == trader.id,
            lambda b: {"fiat": fiats.get(b.fiat_currency_id)},
        ),
        "orders": _order_rows(session, OrderHistory.trader_id == trader.id),
    }


def _merchant_part(session: Session, merchant: Merchant) -> dict[str, Any]:
    cryptos, fiats = _codes(session)
    stores = session.scalars(
        select(MerchantStore)
        .where(MerchantStore.merchant_id == merchant.id)
        .order_by(MerchantStore.id)
    ).all()
    store_ids = [s.id for s in stores]
    return {
        "stores": [
            {
                "id": s.id,
                "store_name": s.store_name,
                "crypto": cryptos.get(s.crypto_currency_id),
                "fiat": fiats.get(s.fiat_currency_id),
                "public_api_key": s.public_api_key,
                "private_api_key_masked": f"****{s.private_api_key_last4}",
                "callback_url": s.callback_url,
                "access": s.access,
                "trafic_access": s.trafic_access,
                "created_at": s.created_at,
                "commissions": [
                    _columns(c, skip=frozenset({"store_id"}))
                    for c in session.scalars(
                        select(StoreCommission).where(StoreCommission.store_id == s.id)
                    )
                ],
            }
            for s in stores
        ],
        "balances": [
            {
                "store_id": b.store_id,
                "crypto": cryptos.get(b.crypto_currency_id),
                "balance": b.balance,
                "frozen": b.frozen,
            }
            for b in session.scalars(
                select(BalanceStore).where(BalanceStore.store_id.in_(store_ids))
            )
        ],
        "balance_history": _history_rows(
            session,
            BalanceStoreHistory.balance_store_id,
            BalanceStore,
            BalanceStore.store_id.in_(store_ids),
            lambda b: {"store_id": b.store_id, "crypto": cryptos.get(b.crypto_currency_id)},
        ),
        "orders": _order_rows(session, OrderHistory.merchant_id == merchant.id),
    }


def export_user(
    session: Session, *, actor: Principal, user_id: int, ip_address: str | None = None
) -> dict[str, Any]:
    """Everything stored about a person as one JSON-ready bundle (numbers masked). Audited.

    Each audit row says whether the person wrote it (`person_is: actor`) or it is about them
    (`subject`: written by staff or the system; who wrote it is not exported). An administrator's
    export needs `users:manage:admin`, as their erasure does."""
    user = load_user(session, user_id)
    if Role(user.role) == Role.ADMIN:
        ensure_permission(actor, "users:manage:admin")
    detail = user_detail(session, user)
    profile = profile_of(user)
    bundle: dict[str, Any] = {
        "exported_at": utcnow(),
        "user": detail.model_dump(exclude={"profile", "permissions"}),
        "profile": detail.profile,
        "permissions": detail.permissions,
    }
    if isinstance(profile, Trader):
        bundle.update(_trader_part(session, profile))
    elif isinstance(profile, Merchant):
        bundle.update(_merchant_part(session, profile))
    elif isinstance(profile, TeamLead):
        bundle["team_trader_ids"] = list(
            session.scalars(select(Trader.id).where(Trader.team_lead_id == profile.id))
        )
    audit = session.scalars(
        select(AuditLog)
        .where(_audit_scope(user, profile))
        .order_by(AuditLog.id.desc())
        .limit(EXPORT_AUDIT_LIMIT)
    ).all()
    bundle["audit_log"] = [
        {
            **_columns(a, skip=frozenset({"user_id"})),
            "person_is": "actor" if a.user_id == user.id else "subject",
        }
        for a in audit
    ]
    log_event(
        session,
        action="user.exported",
        user_id=actor.user_id,
        target_entity="user",
        target_id=user.id,
        details={"role": user.role, "audit_rows": len(audit)},
        ip_address=ip_address,
    )
    result: dict[str, Any] = _plain(bundle)
    return result


# --------------------------------------------------------------------------- anonymise a person


def _refuse_open_trader(session: Session, trader: Trader) -> list[int]:
    # Lock the requisites first: the selector skips locked ones, so nothing new is assigned.
    req_ids = list(
        session.scalars(
            select(ReqTrader.id)
            .where(ReqTrader.trader_id == trader.id)
            .order_by(ReqTrader.id)
            .with_for_update()
        )
    )
    open_orders = session.scalar(
        select(func.count())
        .select_from(OrderHistory)
        .where(OrderHistory.trader_id == trader.id, OrderHistory.status.in_(OPEN_ORDER_STATUSES))
    )
    if open_orders:
        raise Conflict(f"The trader has {open_orders} open order(s)", code="open_orders")
    frozen = session.scalar(
        select(func.coalesce(func.sum(BalanceTrader.frozen), 0)).where(
            BalanceTrader.trader_id == trader.id
        )
    )
    if frozen:
        raise Conflict("The trader has frozen money", code="frozen_money")
    return req_ids


def _refuse_open_merchant(session: Session, merchant: Merchant) -> list[MerchantStore]:
    stores = list(
        session.scalars(
            select(MerchantStore)
            .where(MerchantStore.merchant_id == merchant.id)
            .order_by(MerchantStore.id)
            .with_for_update()
        )
    )
    store_ids = [s.id for s in stores]
    open_orders = (
        session.scalar(
            select(func.count())
            .select_from(OrderHistory)
            .where(
                OrderHistory.merchant_id == merchant.id,
                OrderHistory.status.in_(OPEN_ORDER_STATUSES),
            )
        )
        or 0
    )
    open_orders += (
        session.scalar(
            select(func.count())
            .select_from(IncomingOrder)
            .where(
                IncomingOrder.store_id.in_(store_ids),
                IncomingOrder.status.in_(OPEN_INTAKE_STATUSES),
            )
        )
        or 0
    )
    if open_orders:
        raise Conflict(f"The merchant has {open_orders} open order(s)", code="open_orders")
    frozen = session.scalar(
        select(func.coalesce(func.sum(BalanceStore.frozen), 0)).where(
            BalanceStore.store_id.in_(store_ids)
        )
    )
    if frozen:
        raise Conflict("The merchant's stores have frozen money", code="frozen_money")
    return stores


def _json_quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _scrub_audit(
    session: Session, *, everywhere: list[str], exact_values: list[str], scope: Any
) -> None:
    """Replace personal strings inside audit details: `everywhere` as substrings of any row (an
    email or a full number is unambiguous), `exact_values` (names) as whole JSON strings of the
    rows in `scope` only, so another person's row is never touched."""
    for value in {v for v in everywhere if v}:
        needle = _json_quoted(value)[1:-1]
        session.execute(
            update(AuditLog)
            .where(func.strpos(AuditLog.details.cast(_TEXT), needle) > 0)
            .values(
                details=func.replace(AuditLog.details.cast(_TEXT), needle, ANONYMIZED).cast(
                    AuditLog.details.type
                )
            )
            .execution_options(synchronize_session=False)
        )
    for value in {v for v in exact_values if v}:
        needle = _json_quoted(value)
        session.execute(
            update(AuditLog)
            .where(scope, func.strpos(AuditLog.details.cast(_TEXT), needle) > 0)
            .values(
                details=func.replace(
                    AuditLog.details.cast(_TEXT), needle, _json_quoted(ANONYMIZED)
                ).cast(AuditLog.details.type)
            )
            .execution_options(synchronize_session=False)
        )


def anonymize_user(
    session: Session,
    *,
    actor: Principal,
    user_id: int,
    reason: str,
    ip_address: str | None = None,
) -> AnonymizeRead:
    """Replace a person's identifying data, keep the money history; 409 with money in flight."""
    lock_superusers(session)  # before the row lock: one order for every superuser change
    user = load_user(session, user_id, for_update=True)
    role = Role(user.role)
    if role == Role.ADMIN:
        ensure_permission(actor, "users:manage:admin")
    # Erasure ends the account for good: as for a deactivation, only by someone holding every
    # grant the person holds.
    permission_service.ensure_outranks(actor, user_grants(user))
    if user.anonymized_at is not None:
        return AnonymizeRead(user_id=user.id, changed=False, anonymized_at=user.anonymized_at)
    if user.id == actor.user_id:
        raise Conflict("You cannot anonymise yourself", code="self_anonymization")
    ensure_not_last_superuser(session, user, remaining=())
    profile = profile_of(user)
    old_email = user.email
    names: list[str] = []
    numbers: list[str] = []
    scope = _audit_scope(user, profile)

    if isinstance(profile, Trader):
        req_ids = _refuse_open_trader(session, profile)
        requisites = session.scalars(select(ReqTrader).where(ReqTrader.id.in_(req_ids))).all()
        for req in requisites:
            numbers.append(req.req_number)
            req.req_number = req.req_last4
            req.status = RequisiteStatus.ARCHIVED.value
            req.is_excluded_from_distribution = True
        for owner in session.scalars(
            select(OwnerOfRequisites).where(OwnerOfRequisites.trader_id == profile.id)
        ):
            names += [owner.first_name, owner.last_name, owner.middle_name or ""]
            owner.first_name, owner.last_name, owner.middle_name = ANONYMIZED, ANONYMIZED, None
    elif isinstance(profile, Merchant):
        for store in _refuse_open_merchant(session, profile):
            public, private = generate_api_key_pair()
            store.public_api_key, store.private_api_key = public, private
            store.private_api_key_last4 = private[-4:]
            store.callback_secret = generate_callback_secret()
            store.callback_url = None
            store.access = False
            store.trafic_access = False
            store.keys_rotated_at = utcnow()
        names.append(profile.company_name or "")
        profile.company_name = None
        profile.is_verified = False
    if profile is not None:
        names += [profile.first_name or "", profile.last_name or ""]
        profile.first_name = profile.last_name = None
        if hasattr(profile, "role_description"):
            profile.role_description = None
        if hasattr(profile, "granted_permissions"):
            profile.granted_permissions = []

    now = utcnow()
    user.email = f"anonymized-{user.id}@anonymized.invalid"
    user.password_hash = hash_password(secrets.token_urlsafe(32))
    user.is_active = False
    revoke_tokens(user)
    user.anonymized_at = now
    session.flush()
    log_event(
        session,
        action="user.anonymized",
        user_id=actor.user_id,
        target_entity="user",
        target_id=user.id,
        details={"role": role.value, "reason": reason},
        ip_address=ip_address,
    )
    _scrub_audit(session, everywhere=[old_email, *numbers], exact_values=names, scope=scope)
    session.expire_all()
    return AnonymizeRead(user_id=user_id, changed=True, anonymized_at=now)


# --------------------------------------------------------------------------- a store's customer


def anonymize_customer(
    session: Session,
    *,
    actor: Principal,
    store_id: int,
    customer_id: str,
    ip_address: str | None = None,
) -> CustomerAnonymizeRead:
    """Remove a payer's IP, names and payout numbers from the store's closed orders; 409 if open."""
    if session.get(MerchantStore, store_id) is None:
        raise NotFound("Store not found")
    incoming = list(
        session.scalars(
            select(IncomingOrder)
            .where(IncomingOrder.store_id == store_id, IncomingOrder.customer_id == customer_id)
            .order_by(IncomingOrder.id)
            .with_for_update()
        )
    )
    ids = [o.id for o in incoming]
    open_intake = sum(1 for o in incoming if o.status in OPEN_INTAKE_STATUSES)
    open_orders = (
        session.scalar(
            select(func.count())
            .select_from(OrderHistory)
            .where(
                OrderHistory.incoming_order_id.in_(ids),
                OrderHistory.status.in_(OPEN_ORDER_STATUSES),
            )
        )
        or 0
    )
    if open_intake or open_orders:
        raise Conflict(
            f"The customer has {open_intake + open_orders} open order(s)", code="open_orders"
        )
    if not ids:
        return CustomerAnonymizeRead(store_id=store_id, orders=0, changed=False)
    pseudonym = "anon-" + secrets.token_hex(8)
    for order in incoming:
        order.customer_id = pseudonym
        order.customer_ip = None
        order.beneficiary_name = None
        order.beneficiary_number = None
    session.execute(
        update(OrderHistory)
        .where(OrderHistory.incoming_order_id.in_(ids))
        .values(customer_id=pseudonym, customer_ip=None)
        .execution_options(synchronize_session=False)
    )
    needle = _json_quoted(customer_id)
    session.execute(
        update(CallbackDelivery)
        .where(
            CallbackDelivery.incoming_order_id.in_(ids),
            func.strpos(CallbackDelivery.payload.cast(_TEXT), needle) > 0,
        )
        .values(
            payload=func.replace(
                CallbackDelivery.payload.cast(_TEXT), needle, _json_quoted(pseudonym)
            ).cast(CallbackDelivery.payload.type)
        )
        .execution_options(synchronize_session=False)
    )
    session.flush()
    log_event(
        session,
        action="customer.anonymized",
        user_id=actor.user_id,
        target_entity="store",
        target_id=store_id,
        details={"pseudonym": pseudonym, "orders": len(ids)},
        ip_address=ip_address,
    )
    return CustomerAnonymizeRead(store_id=store_id, orders=len(ids), changed=True)
