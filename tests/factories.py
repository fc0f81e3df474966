"""Builders of small worlds for tests and benchmarks: reference data, stores, traders, requisites,
intake orders. Each call makes unique codes and emails, so tests sharing a database never collide.
All builders flush; the caller's transaction decides what persists."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import (
    Admin,
    AvailableBankMethod,
    Bank,
    CryptoCurrency,
    ExchangeRate,
    FiatCurrency,
    FullRequisitesSettings,
    IncomingOrder,
    Merchant,
    MerchantStore,
    OwnerOfRequisites,
    PaymentMethod,
    ReqTrader,
    RoleModel,
    StoreCommission,
    Support,
    TeamLead,
    TimeZone,
    Trader,
    TraderCommission,
    User,
)
from jivapay.database.types import last4
from jivapay.enums import IncomingOrderStatus, OrderType, RequisiteStatus, Role
from jivapay.money import (
    commission,
    crypto_to_fiat,
    fiat_to_crypto,
    payout_store_hold,
)
from jivapay.services import balance_manager

# Argon2 hashing is slow on purpose; builders that make many users share one hash.
_PASSWORD_HASH: str | None = None


def _password_hash() -> str:
    global _PASSWORD_HASH
    if _PASSWORD_HASH is None:
        from jivapay.security import hash_password

        _PASSWORD_HASH = hash_password("factory-password-1")
    return _PASSWORD_HASH


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def ensure_roles(session: Session) -> None:
    existing = {r.name for r in session.query(RoleModel).all()}
    for role in Role:
        if role.value not in existing:
            session.add(RoleModel(name=role.value))
    session.flush()


def make_user(session: Session, role: Role, email: str | None = None) -> User:
    ensure_roles(session)
    user = User(
        email=email or f"{role.value}-{_tag()}@factory.test",
        password_hash=_password_hash(),
        role=role.value,
    )
    session.add(user)
    session.flush()
    return user


@dataclass(frozen=True)
class Ref:
    fiat: FiatCurrency
    crypto: CryptoCurrency
    bank: Bank
    method: PaymentMethod
    rate: ExchangeRate


def make_reference(
    session: Session, *, rate: Decimal = Decimal("100"), rate_at: datetime | None = None
) -> Ref:
    tag = _tag()
    fiat = FiatCurrency(code=f"F{tag[:6]}".upper(), name="Test fiat")
    crypto = CryptoCurrency(code=f"C{tag[:6]}".upper(), name="Test crypto")
    bank = Bank(code=f"bank_{tag}", name="Test bank")
    method = PaymentMethod(code=f"card_{tag}", name="Card")
    session.add_all([fiat, crypto, bank, method])
    session.flush()
    at = rate_at or utcnow()
    ex = ExchangeRate(
        crypto_currency_id=crypto.id,
        fiat_currency_id=fiat.id,
        buy_rate=rate,
        sell_rate=rate,
        median_rate=rate,
        source="manual",
        updated_at=at,
    )
    session.add(ex)
    session.flush()
    return Ref(fiat, crypto, bank, method, ex)


@dataclass(frozen=True)
class StoreWorld:
    store: MerchantStore
    merchant: Merchant
    public_key: str
    private_key: str


def make_store(
    session: Session,
    ref: Ref,
    *,
    payin_percent: Decimal = Decimal("5"),
    payout_percent: Decimal = Decimal("3"),
    lower: Decimal = Decimal("10"),
    upper: Decimal = Decimal("100000"),
    balance: Decimal | None = None,
    **store_fields: object,
) -> StoreWorld:
    user = make_user(session, Role.MERCHANT)
    merchant = Merchant(user_id=user.id, company_name="Factory shop")
    session.add(merchant)
    session.flush()
    public_key, private_key = f"pk_{secrets.token_hex(12)}", f"sk_{secrets.token_hex(16)}"
    fields: dict[str, object] = {
        "pay_in_enabled": True,
        "pay_out_enabled": True,
        "access": True,
        "trafic_access": True,
        **store_fields,
    }
    store = MerchantStore(
        merchant_id=merchant.id,
        store_name=f"store-{_tag()}",
        crypto_currency_id=ref.crypto.id,
        fiat_currency_id=ref.fiat.id,
        lower_limit=lower,
        upper_limit=upper,
        public_api_key=public_key,
        private_api_key=private_key,
        private_api_key_last4=private_key[-4:],
        callback_secret=f"whsec_{secrets.token_hex(16)}",
        **fields,
    )
    session.add(store)
    session.flush()
    session.add(
        StoreCommission(
            store_id=store.id, commission_payin=payin_percent, commission_payout=payout_percent
        )
    )
    session.flush()
    if balance:
        balance_manager.deposit_store_balance(
            session,
            store_id=store.id,
            crypto_currency_id=ref.crypto.id,
            amount=balance,
            actor_user_id=None,
            reason="factory",
        )
    return StoreWorld(store, merchant, public_key, private_key)


def make_trader(
    session: Session,
    ref: Ref,
    *,
    payin_percent: Decimal = Decimal("3"),
    payout_percent: Decimal = Decimal("1"),
    deposit: Decimal | None = Decimal("10000"),
    priority: int = 5,
    in_work: bool = True,
    **trader_fields: object,
) -> Trader:
    user = make_user(session, Role.TRADER)
    trader = Trader(user_id=user.id, in_work=in_work, trafic_priority=priority, **trader_fields)
    session.add(trader)
    session.flush()
    session.add(
        TraderCommission(
            trader_id=trader.id, commission_payin=payin_percent, commission_payout=payout_percent
        )
    )
    session.flush()
    if deposit:
        balance_manager.deposit_trader_balance(
            session,
            trader_id=trader.id,
            crypto_currency_id=ref.crypto.id,
            amount=deposit,
            actor_user_id=None,
            reason="factory",
        )
    return trader


def make_requisite(
    session: Session,
    trader: Trader,
    ref: Ref,
    *,
    lower: Decimal = Decimal("1"),
    upper: Decimal = Decimal("1000000"),
    total_limit: Decimal | None = None,
    window_minutes: int | None = None,
    day_max: Decimal | None = None,
    max_concurrent: int | None = None,
    pay_in: bool = True,
    pay_out: bool = True,
    status: RequisiteStatus = RequisiteStatus.APPROVED,
    number: str | None = None,
) -> ReqTrader:
    owner = OwnerOfRequisites(trader_id=trader.id, first_name="Anna", last_name="Ivanova")
    session.add(owner)
    session.flush()
    number = number or "2200" + "".join(secrets.choice("0123456789") for _ in range(12))
    req = ReqTrader(
        trader_id=trader.id,
        owner_id=owner.id,
        fiat_currency_id=ref.fiat.id,
        payment_method_id=ref.method.id,
        bank_id=ref.bank.id,
        req_number=number,
        req_last4=last4(number),
        status=status.value,
        distribution_weight=trader.trafic_priority,
    )
    session.add(req)
    session.flush()
    session.add(
        FullRequisitesSettings(
            requisite_id=req.id,
            pay_in=pay_in,
            pay_out=pay_out,
            lower_limit=lower,
            upper_limit=upper,
            total_limit=total_limit,
            turnover_limit_minutes=window_minutes,
            turnover_day_max=day_max,
            max_concurrent_orders=max_concurrent,
        )
    )
    session.flush()
    return req


def make_incoming(
    session: Session,
    world: StoreWorld,
    ref: Ref,
    *,
    amount_fiat: Decimal = Decimal("1000.00"),
    order_type: OrderType = OrderType.PAYIN,
    merchant_order_id: str | None = None,
    created_at: datetime | None = None,
) -> IncomingOrder:
    """An intake order as the gateway records it (rate and store commission fixed, PayOut held)."""
    store = world.store
    rate = ref.rate.median_rate
    amount_crypto = fiat_to_crypto(amount_fiat, rate)
    percent = Decimal("5") if order_type == OrderType.PAYIN else Decimal("3")
    sc = (
        session.query(StoreCommission)
        .filter_by(store_id=store.id)
        .order_by(StoreCommission.id.desc())
        .first()
    )
    if sc is not None:
        percent = sc.commission_payin if order_type == OrderType.PAYIN else sc.commission_payout
    store_commission = commission(amount_crypto, percent)
    hold = (
        payout_store_hold(amount_crypto, store_commission)
        if order_type == OrderType.PAYOUT
        else Decimal(0)
    )
    now = created_at or utcnow()
    incoming = IncomingOrder(
        public_id=f"ord_{secrets.token_urlsafe(12)}",
        store_id=store.id,
        order_type=order_type.value,
        fiat_currency_id=ref.fiat.id,
        crypto_currency_id=ref.crypto.id,
        amount_fiat=amount_fiat,
        amount_crypto=amount_crypto,
        exchange_rate=rate,
        store_commission_rate=percent,
        store_commission=store_commission,
        store_hold=hold,
        merchant_order_id=merchant_order_id or f"m-{_tag()}",
        beneficiary_number="4111111111111111" if order_type == OrderType.PAYOUT else None,
        beneficiary_last4="1111" if order_type == OrderType.PAYOUT else None,
        beneficiary_name="Ivan Payee" if order_type == OrderType.PAYOUT else None,
        status=IncomingOrderStatus.NEW.value,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(incoming)
    session.flush()
    if hold:
        balance_manager.freeze_store_hold(
            session,
            store_id=store.id,
            crypto_currency_id=ref.crypto.id,
            amount=hold,
            incoming_order_id=incoming.id,
        )
    return incoming


def time_zone(session: Session, name: str, utc_offset_minutes: int) -> TimeZone:
    """The `time_zones` row of the IANA zone `name` (the seeded one when there is one)."""
    row = session.scalars(select(TimeZone).where(TimeZone.name == name)).first()
    if row is None:
        row = TimeZone(name=name, utc_offset_minutes=utc_offset_minutes)
        session.add(row)
        session.flush()
    return row


def make_bank_method(session: Session, ref: Ref) -> AvailableBankMethod:
    """Make `ref`'s bank offer `ref`'s method in `ref`'s fiat (the gateway checks availability)."""
    row = AvailableBankMethod(
        fiat_currency_id=ref.fiat.id, bank_id=ref.bank.id, payment_method_id=ref.method.id
    )
    session.add(row)
    session.flush()
    return row


def gateway_headers(
    world: StoreWorld,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    idempotency_key: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Signed store headers for a gateway request (and an Idempotency-Key when given)."""
    import time

    from jivapay.security import compute_signature

    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "X-API-Key": world.public_key,
        "X-Timestamp": ts,
        "X-Signature": compute_signature(world.private_key, ts, method, path, body),
        "Content-Type": "application/json",
    }
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def make_incoming_batch(
    session: Session,
    world: StoreWorld,
    ref: Ref,
    amounts: list[Decimal],
    *,
    created_at: datetime | None = None,
) -> list[IncomingOrder]:
    """Many PayIn intake orders at once (one flush), as `make_incoming` records each one."""
    sc = (
        session.query(StoreCommission)
        .filter_by(store_id=world.store.id)
        .order_by(StoreCommission.id.desc())
        .first()
    )
    percent = sc.commission_payin if sc is not None else Decimal("5")
    rate = ref.rate.median_rate
    now = created_at or utcnow()
    rows: list[IncomingOrder] = []
    for amount_fiat in amounts:
        amount_crypto = fiat_to_crypto(amount_fiat, rate)
        rows.append(
            IncomingOrder(
                public_id=f"ord_{secrets.token_urlsafe(12)}",
                store_id=world.store.id,
                order_type=OrderType.PAYIN.value,
                fiat_currency_id=ref.fiat.id,
                crypto_currency_id=ref.crypto.id,
                amount_fiat=amount_fiat,
                amount_crypto=amount_crypto,
                exchange_rate=rate,
                store_commission_rate=percent,
                store_commission=commission(amount_crypto, percent),
                store_hold=Decimal(0),
                merchant_order_id=f"m-{_tag()}-{len(rows)}",
                status=IncomingOrderStatus.NEW.value,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    session.add_all(rows)
    session.flush()
    return rows


def make_staff(
    session: Session, role: Role, *, permissions: list[str] | None = None
) -> Admin | Support | TeamLead:
    """An admin, support or teamlead profile with `permissions` (default: the role's usual
    template: super_admin, support_orders, teamlead)."""
    from jivapay.permissions import template_permissions

    templates = {
        Role.ADMIN: "super_admin",
        Role.SUPPORT: "support_orders",
        Role.TEAMLEAD: "teamlead",
    }
    models = {Role.ADMIN: Admin, Role.SUPPORT: Support, Role.TEAMLEAD: TeamLead}
    grants = template_permissions(templates[role]) if permissions is None else permissions
    user = make_user(session, role)
    profile = models[role](user_id=user.id, granted_permissions=grants)
    session.add(profile)
    session.flush()
    return profile


__all__ = ["crypto_to_fiat"]
