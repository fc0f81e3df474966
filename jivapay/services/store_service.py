"""Merchant stores: creation, reads, the merchant's and the admin's changes, deactivation, API key
and callback secret rotation, and store commissions. One service for the merchant API and the staff
store controls, so a key rotation or a store view is the same code wherever it is asked for.

Rules:
- A merchant sees and changes its own stores only (`query_filters.stores_visible_to`); another
  merchant's store is `NotFound`. Staff reach any store by id once their route's grant is checked.
- A new store has `access` on, `trafic_access` off and no commission: it takes orders only once an
  admin sets a commission and enables traffic (`admin_update` refuses traffic without a commission).
- Secrets (the private API key, the callback secret) are returned by create and rotate only; the
  private key is stored encrypted, shown afterwards as its last four characters.
- Every change writes one audit row with the actor, the IP and the old and new values, in the
  caller's transaction; a change to what is already there answers `changed=False` and writes nothing.
- Rotation locks the store row, so two concurrent rotations serialise and the last answer's key is
  the one that works; the old public key stops matching any store the moment the change commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpcore
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.config import get_settings
from jivapay.database.base import utcnow
from jivapay.database.models import CryptoCurrency, FiatCurrency, MerchantStore, StoreCommission
from jivapay.enums import AuditLevel
from jivapay.money import FIAT_QUANTUM
from jivapay.schemas.stores import (
    StoreAdminUpdate,
    StoreCommissionIn,
    StoreCommissionRead,
    StoreCreate,
    StoreRead,
    StoreUpdate,
)
from jivapay.security import Principal, generate_api_key_pair, generate_callback_secret
from jivapay.services import callback_sender, reference_data
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import Conflict, NotFound, ValidationFailed
from jivapay.utils.query_filters import stores_visible_to

_ENTITY = "merchant_store"
PERCENT_QUANTUM = Decimal("0.0001")  # NUMERIC(7, 4)


@dataclass(frozen=True)
class Actor:
    """Who changes a store, for the audit row."""

    user_id: int | None
    ip_address: str | None = None


@dataclass(frozen=True)
class CreatedStore:
    store: StoreRead
    private_api_key: str
    callback_secret: str


@dataclass(frozen=True)
class RotatedKeys:
    store_id: int
    public_api_key: str
    private_api_key: str
    keys_rotated_at: Any


# --------------------------------------------------------------------------- reads


def _latest_commission(session: Session, store_id: int) -> StoreCommission | None:
    return session.scalars(
        select(StoreCommission)
        .where(StoreCommission.store_id == store_id)
        .order_by(StoreCommission.created_at.desc(), StoreCommission.id.desc())
        .limit(1)
    ).first()


def store_view(session: Session, store: MerchantStore) -> StoreRead:
    """The public view of a store (no secrets), with what keeps it from taking orders."""
    commission = _latest_commission(session, store.id)
    reasons = []
    if not store.access:
        reasons.append("access_disabled")
    if not store.trafic_access:
        reasons.append("traffic_disabled")
    if commission is None:
        reasons.append("commission_missing")
    return StoreRead(
        id=store.id,
        merchant_id=store.merchant_id,
        store_name=store.store_name,
        fiat_currency=reference_data.currency_code(session, FiatCurrency, store.fiat_currency_id)
        or "",
        crypto_currency=reference_data.currency_code(
            session, CryptoCurrency, store.crypto_currency_id
        )
        or "",
        lower_limit=Decimal(store.lower_limit).quantize(FIAT_QUANTUM),
        upper_limit=Decimal(store.upper_limit).quantize(FIAT_QUANTUM),
        public_api_key=store.public_api_key,
        private_api_key_last4=store.private_api_key_last4,
        callback_url=store.callback_url,
        callbacks_disabled_at=store.callbacks_disabled_at,
        pay_in_enabled=store.pay_in_enabled,
        pay_out_enabled=store.pay_out_enabled,
        access=store.access,
        trafic_access=store.trafic_access,
        gateway_require_customer_id_param=store.gateway_require_customer_id_param,
        gateway_require_amount_param=store.gateway_require_amount_param,
        require_payer_receipt=store.require_payer_receipt,
        order_ttl_minutes=store.order_ttl_minutes,
        commission=None if commission is None else _commission_read(commission),
        takes_orders=not reasons,
        not_live_reasons=reasons,
        keys_rotated_at=store.keys_rotated_at,
        created_at=store.created_at,
        updated_at=store.updated_at,
    )


def visible_store(
    session: Session, *, principal: Principal, store_id: int, lock: bool = False
) -> MerchantStore:
    """A store the principal may see (locked on request); anything else is `NotFound`."""
    stmt = select(MerchantStore).where(MerchantStore.id == store_id, stores_visible_to(principal))
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    store = session.scalars(stmt).one_or_none()
    if store is None:
        raise NotFound("Store not found", code="store_not_found")
    return store


def list_stores(
    session: Session, *, principal: Principal, limit: int, offset: int
) -> tuple[list[StoreRead], int]:
    """The stores the principal may see, oldest first, with the total for paging."""
    visible = stores_visible_to(principal)
    total = session.scalar(select(func.count()).select_from(MerchantStore).where(visible)) or 0
    rows = session.scalars(
        select(MerchantStore).where(visible).order_by(MerchantStore.id).limit(limit).offset(offset)
    ).all()
    return [store_view(session, row) for row in rows], total


def get_store(session: Session, *, principal: Principal, store_id: int) -> StoreRead:
    """One store the principal may see."""
    return store_view(session, visible_store(session, principal=principal, store_id=store_id))


# --------------------------------------------------------------------------- validation


def check_callback_url(url: str) -> None:
    """Refuse a callback URL that can never be called, or (by default) one reaching a private net."""
    problem = callback_sender.url_problem(url)
    if problem is not None:
        raise ValidationFailed(problem, code="invalid_callback_url")
    if get_settings().CALLBACK_ALLOW_PRIVATE_NETWORKS:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        callback_sender.public_addresses(parts.hostname or "", port)
    except callback_sender.UnsafeCallbackURL as exc:
        raise ValidationFailed(str(exc), code="callback_url_not_public") from None
    except httpcore.ConnectError:
        raise ValidationFailed(
            f"callback URL host {parts.hostname!r} does not resolve", code="invalid_callback_url"
        ) from None


def _currency_id(session: Session, model: type[Any], code: str, field: str) -> int:
    row_id = session.scalar(
        select(model.id).where(model.code == code.upper(), model.is_active.is_(True))
    )
    if row_id is None:
        raise ValidationFailed(f"unknown {field} {code!r}", code="unknown_currency")
    return int(row_id)


def _check_limits(store: MerchantStore) -> None:
    if store.lower_limit > store.upper_limit:
        raise ValidationFailed(
            "lower_limit must not exceed upper_limit",
            code="limits_not_ordered",
            extra={"lower_limit": str(store.lower_limit), "upper_limit": str(store.upper_limit)},
        )


# --------------------------------------------------------------------------- changes


def _audit(
    session: Session,
    actor: Actor,
    action: str,
    store_id: int,
    details: dict[str, Any] | None = None,
    level: AuditLevel = AuditLevel.INFO,
) -> None:
    log_event(
        session,
        action=action,
        user_id=actor.user_id,
        ip_address=actor.ip_address,
        target_entity=_ENTITY,
        target_id=store_id,
        details=details,
        level=level,
    )


def _apply(
    session: Session, store: MerchantStore, requested: dict[str, Any], actor: Actor, action: str
) -> bool:
    """Set the requested fields that differ; audit old and new values. True when anything changed."""
    changes = {k: v for k, v in requested.items() if getattr(store, k) != v}
    if not changes:
        return False
    old = {k: getattr(store, k) for k in changes}
    for key, value in changes.items():
        setattr(store, key, value)
    _check_limits(store)
    store.updated_at = utcnow()
    session.flush()
    _audit(session, actor, action, store.id, {"old": old, "new": changes})
    return True


def create_store(
    session: Session, *, merchant_id: int, data: StoreCreate, actor: Actor
) -> CreatedStore:
    """A new store of `merchant_id`, with its key pair and callback secret (shown once)."""
    fiat_id = _currency_id(session, FiatCurrency, data.fiat_currency, "fiat currency")
    crypto_id = _currency_id(session, CryptoCurrency, data.crypto_currency, "crypto currency")
    if data.callback_url is not None:
        check_callback_url(data.callback_url)
    public_key, private_key = generate_api_key_pair()
    secret = generate_callback_secret()
    store = MerchantStore(
        merchant_id=merchant_id,
        store_name=data.store_name,
        fiat_currency_id=fiat_id,
        crypto_currency_id=crypto_id,
        lower_limit=data.lower_limit,
        upper_limit=data.upper_limit,
        public_api_key=public_key,
        private_api_key=private_key,
        private_api_key_last4=private_key[-4:],
        callback_url=data.callback_url,
        callback_secret=secret,
        pay_in_enabled=data.pay_in_enabled,
        pay_out_enabled=data.pay_out_enabled,
        gateway_require_customer_id_param=data.gateway_require_customer_id_param,
        gateway_require_amount_param=data.gateway_require_amount_param,
        require_payer_receipt=data.require_payer_receipt,
        order_ttl_minutes=data.order_ttl_minutes,
        access=True,
        trafic_access=False,
    )
    session.add(store)
    session.flush()
    _audit(
        session,
        actor,
        "store.create",
        store.id,
        {"new": data.model_dump(mode="json"), "public_key": public_key},
    )
    return CreatedStore(store_view(session, store), private_key, secret)


def update_store(
    session: Session, *, principal: Principal, store_id: int, data: StoreUpdate, actor: Actor
) -> tuple[StoreRead, bool]:
    """The merchant's change of its own store's settings; `changed` is False on a repeat."""
    requested = data.model_dump(exclude_unset=True)
    if "callback_url" in requested and requested["callback_url"] is not None:
        check_callback_url(requested["callback_url"])  # DNS before the row lock
    nulls = sorted(k for k, v in requested.items() if v is None and k != "callback_url")
    if nulls:
        raise ValidationFailed(f"{', '.join(nulls)} cannot be null", code="field_required")
    store = visible_store(session, principal=principal, store_id=store_id, lock=True)
    changed = _apply(session, store, requested, actor, "store.update")
    return store_view(session, store), changed


def deactivate_store(
    session: Session, *, principal: Principal, store_id: int, actor: Actor
) -> tuple[StoreRead, bool]:
    """The merchant switches its store off for good (access off; only an admin turns it back on)."""
    store = visible_store(session, principal=principal, store_id=store_id, lock=True)
    changed = _apply(session, store, {"access": False}, actor, "store.deactivate")
    return store_view(session, store), changed


def rotate_keys(session: Session, *, store: MerchantStore, actor: Actor) -> RotatedKeys:
    """A new API key pair for `store` (locked here); the old pair is refused from commit on."""
    locked = _lock_store(session, store.id)
    old_public = locked.public_api_key
    public_key, private_key = generate_api_key_pair()
    now = utcnow()
    locked.public_api_key = public_key
    locked.private_api_key = private_key
    locked.private_api_key_last4 = private_key[-4:]
    locked.keys_rotated_at = now
    locked.updated_at = now
    session.flush()
    _audit(
        session,
        actor,
        "store.keys_rotated",
        locked.id,
        {"old_public_key": old_public, "new_public_key": public_key},
        level=AuditLevel.WARNING,
    )
    return RotatedKeys(locked.id, public_key, private_key, now)


def rotate_callback_secret(session: Session, *, store: MerchantStore, actor: Actor) -> str:
    """A new callback signing secret for `store` (locked here), used from the next attempt on."""
    locked = _lock_store(session, store.id)
    secret = generate_callback_secret()
    locked.callback_secret = secret
    locked.updated_at = utcnow()
    session.flush()
    _audit(session, actor, "store.callback_secret_rotated", locked.id, level=AuditLevel.WARNING)
    return secret


# --------------------------------------------------------------------------- staff controls


def staff_store(session: Session, *, store_id: int, lock: bool = False) -> MerchantStore:
    """Any store by id, for staff whose grant was checked; `NotFound` when there is none."""
    store = _lock_store(session, store_id) if lock else session.get(MerchantStore, store_id)
    if store is None:
        raise NotFound("Store not found", code="store_not_found")
    return store


def _lock_store(session: Session, store_id: int) -> MerchantStore:
    # populate_existing: compute on the locked row's values, not on what the session read before.
    store = session.scalars(
        select(MerchantStore)
        .where(MerchantStore.id == store_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if store is None:
        raise NotFound("Store not found", code="store_not_found")
    return store


def admin_update(
    session: Session, *, store_id: int, data: StoreAdminUpdate, actor: Actor
) -> tuple[StoreRead, bool]:
    """Staff change a store: traffic and access switches, limits, lifetime and intake switches."""
    requested = data.model_dump(exclude_unset=True)
    nulls = sorted(k for k, v in requested.items() if v is None)
    if nulls:
        raise ValidationFailed(f"{', '.join(nulls)} cannot be null", code="field_required")
    store = staff_store(session, store_id=store_id, lock=True)
    if requested.get("trafic_access") and _latest_commission(session, store.id) is None:
        raise Conflict(
            "set the store's commission before enabling its traffic", code="commission_missing"
        )
    changed = _apply(session, store, requested, actor, "store.admin_update")
    return store_view(session, store), changed


def set_commission(
    session: Session, *, store_id: int, data: StoreCommissionIn, actor: Actor
) -> tuple[StoreCommissionRead, bool]:
    """A new commission row for new orders (open orders keep the rate fixed at their intake)."""
    store = staff_store(session, store_id=store_id, lock=True)
    current = _latest_commission(session, store.id)
    if current is not None and (current.commission_payin, current.commission_payout) == (
        data.commission_payin,
        data.commission_payout,
    ):
        return _commission_read(current), False
    row = StoreCommission(
        store_id=store.id,
        commission_payin=data.commission_payin,
        commission_payout=data.commission_payout,
    )
    session.add(row)
    session.flush()
    old = (
        None
        if current is None
        else {
            "commission_payin": current.commission_payin,
            "commission_payout": current.commission_payout,
        }
    )
    _audit(
        session,
        actor,
        "store.commission_set",
        store.id,
        {"old": old, "new": data.model_dump(mode="json")},
    )
    return _commission_read(row), True


def _commission_read(row: StoreCommission) -> StoreCommissionRead:
    return StoreCommissionRead(
        commission_payin=Decimal(row.commission_payin).quantize(PERCENT_QUANTUM),
        commission_payout=Decimal(row.commission_payout).quantize(PERCENT_QUANTUM),
        since=row.created_at,
    )
