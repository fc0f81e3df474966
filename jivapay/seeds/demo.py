"""The demo world: two merchants with one store each, a teamlead with six traders (two approved card
requisites and a 5000 USDT deposit each), and a support user.

Passwords and store keys are random, generated on first creation and reported once. The demo emails
are the idempotency key: when any of them exists the world is left untouched and the report says so,
re-deriving only what can still be read back (store keys decrypt from their rows; passwords cannot).
Deposits go through `balance_manager`, so every seeded balance has its history.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.config import get_settings
from jivapay.database.models import (
    Bank,
    CryptoCurrency,
    FiatCurrency,
    FullRequisitesSettings,
    Merchant,
    MerchantStore,
    OwnerOfRequisites,
    PaymentMethod,
    ReqTrader,
    StoreCommission,
    TeamLead,
    TimeZone,
    Trader,
    TraderCommission,
    User,
)
from jivapay.database.types import last4
from jivapay.enums import RequisiteStatus, Role
from jivapay.security import generate_api_key_pair, generate_callback_secret
from jivapay.seeds.identity import generate_password
from jivapay.services.auth_service import create_user
from jivapay.services.balance_manager import deposit_store_balance, deposit_trader_balance
from jivapay.services.requisite_service import number_holder

DEMO_DOMAIN = "demo.jivapay.local"
CRYPTO = "USDT"
TRADER_DEPOSIT = Decimal("5000")
STORE_DEPOSIT = Decimal("1000")
# Store commissions are above every trader's, so the platform's remainder is positive.
STORE_COMMISSION = (Decimal("6.0"), Decimal("4.0"))  # payin %, payout %
TRADER_COMMISSION = (Decimal("4.0"), Decimal("2.0"))


@dataclass(frozen=True)
class _StoreSpec:
    merchant: str
    company: str
    store_name: str
    fiat: str
    lower: Decimal
    upper: Decimal


@dataclass(frozen=True)
class _TraderSpec:
    local: str  # the part of the demo email before the @
    first_name: str
    last_name: str
    fiat: str
    time_zone: str
    banks: tuple[str, str]
    priority: int


STORES = (
    _StoreSpec(
        "merchant1", "Demo Games LLC", "Demo Games (RUB)", "RUB", Decimal("100"), Decimal("150000")
    ),
    _StoreSpec(
        "merchant2", "Demo Shop KZ", "Demo Shop (KZT)", "KZT", Decimal("500"), Decimal("750000")
    ),
)
TRADERS = (
    _TraderSpec("trader1", "Ivan", "Petrov", "RUB", "Europe/Moscow", ("sberbank", "tinkoff"), 5),
    _TraderSpec("trader2", "Olga", "Smirnova", "RUB", "Europe/Moscow", ("alfabank", "vtb"), 5),
    _TraderSpec(
        "trader3", "Pavel", "Kuznetsov", "RUB", "Europe/Samara", ("tinkoff", "sberbank"), 4
    ),
    _TraderSpec("trader4", "Anna", "Volkova", "RUB", "Asia/Yekaterinburg", ("vtb", "alfabank"), 6),
    _TraderSpec("trader5", "Aidos", "Nurlanov", "KZT", "Asia/Almaty", ("kaspi", "halyk"), 5),
    _TraderSpec("trader6", "Dana", "Serikova", "KZT", "Asia/Almaty", ("halyk", "kaspi"), 5),
)
# Per-fiat requisite limits: lower, upper, total in the window, window minutes, day max, concurrency.
REQUISITE_LIMITS = {
    "RUB": (Decimal("100"), Decimal("100000"), Decimal("300000"), 60, Decimal("1000000"), 5),
    "KZT": (Decimal("500"), Decimal("500000"), Decimal("1500000"), 60, Decimal("5000000"), 5),
}
# Issuer prefixes that make the demo card numbers look like the bank's own.
BIN_PREFIXES = {
    "sberbank": "220220",
    "tinkoff": "220070",
    "alfabank": "415428",
    "vtb": "220024",
    "kaspi": "440043",
    "halyk": "440563",
}
OTHER_LOGINS = ("teamlead", "support")


def demo_email(local: str) -> str:
    return f"{local}@{DEMO_DOMAIN}"


DEMO_EMAILS = tuple(
    demo_email(local)
    for local in (*(s.merchant for s in STORES), *(t.local for t in TRADERS), *OTHER_LOGINS)
)


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str | None  # None when the world existed before this run: passwords are not kept
    role: str


@dataclass(frozen=True)
class DemoStore:
    name: str
    fiat: str
    crypto: str
    public_api_key: str
    private_api_key: str
    callback_secret: str


@dataclass(frozen=True)
class DemoCredentials:
    logins: tuple[DemoLogin, ...]
    stores: tuple[DemoStore, ...]
    gateway_url: str
    fresh: bool  # True when created by this run (passwords included)


def gateway_url() -> str:
    return get_settings().PUBLIC_BASE_URL.rstrip("/") + "/gateway"


def luhn_card_number(prefix: str, length: int = 16) -> str:
    """A random card number with `prefix` and a valid Luhn check digit."""
    body = prefix + "".join(str(secrets.randbelow(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        digit = int(ch)
        if i % 2 == 0:  # doubled: these sit at odd positions once the check digit is appended
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return body + str((10 - total % 10) % 10)


def _free_card_number(session: Session, prefix: str) -> str:
    """A random card number that no requisite in use holds: a number has one trader."""
    while True:
        number = luhn_card_number(prefix)
        if number_holder(session, number) is None:
            return number


def demo_world_exists(session: Session) -> bool:
    return (
        session.scalars(select(User.id).where(User.email.in_(DEMO_EMAILS)).limit(1)).first()
        is not None
    )


def existing_demo_credentials(session: Session) -> DemoCredentials:
    """What can be re-derived of an existing demo world: logins without passwords, store keys."""
    users = session.scalars(select(User).where(User.email.in_(DEMO_EMAILS)).order_by(User.id))
    logins = tuple(DemoLogin(email=u.email, password=None, role=u.role) for u in users)
    stores = session.scalars(
        select(MerchantStore)
        .join(Merchant, Merchant.id == MerchantStore.merchant_id)
        .join(User, User.id == Merchant.user_id)
        .where(User.email.in_(DEMO_EMAILS))
        .order_by(MerchantStore.id)
    )
    return DemoCredentials(
        logins=logins,
        stores=tuple(_demo_store(session, s) for s in stores),
        gateway_url=gateway_url(),
        fresh=False,
    )


def _demo_store(session: Session, store: MerchantStore) -> DemoStore:
    fiat = session.get(FiatCurrency, store.fiat_currency_id)
    crypto = session.get(CryptoCurrency, store.crypto_currency_id)
    return DemoStore(
        name=store.store_name,
        fiat=fiat.code if fiat else "",
        crypto=crypto.code if crypto else "",
        public_api_key=store.public_api_key,
        private_api_key=store.private_api_key,
        callback_secret=store.callback_secret,
    )


def seed_demo(session: Session, *, actor_user_id: int) -> tuple[DemoCredentials, dict[str, int]]:
    """Build the demo world (the caller checked it does not exist); returns credentials and counts."""
    refs = _References(session)
    counts: dict[str, int] = {}
    logins: list[DemoLogin] = []
    stores: list[DemoStore] = []

    for store_spec in STORES:
        login, demo_store = _create_store(session, refs, store_spec, actor_user_id)
        logins.append(login)
        stores.append(demo_store)
    counts["demo_merchants"] = counts["demo_stores"] = len(STORES)

    teamlead_login, teamlead_user = _create_staff(session, "teamlead", Role.TEAMLEAD, "teamlead")
    logins.append(teamlead_login)
    teamlead = session.scalars(select(TeamLead).where(TeamLead.user_id == teamlead_user.id)).one()
    requisites = 0
    for trader_spec in TRADERS:
        logins.append(_create_trader(session, refs, trader_spec, teamlead.id, actor_user_id))
        requisites += len(trader_spec.banks)
    counts["demo_traders"] = len(TRADERS)
    counts["demo_requisites"] = requisites

    support_login, _ = _create_staff(
        session,
        "support",
        Role.SUPPORT,
        "support_orders",
        role_description="Demo support: orders and disputes",
    )
    logins.append(support_login)
    counts["demo_users"] = len(logins)
    credentials = DemoCredentials(
        logins=tuple(logins), stores=tuple(stores), gateway_url=gateway_url(), fresh=True
    )
    return credentials, counts


class _References:
    """Ids of the reference rows the demo world points at (seeded just before)."""

    def __init__(self, session: Session) -> None:
        self.crypto = _id_by(session, CryptoCurrency, CRYPTO)
        self.fiat = {c: _id_by(session, FiatCurrency, c) for c in REQUISITE_LIMITS}
        self.card = _id_by(session, PaymentMethod, "card")
        self.banks = {code: id_ for code, id_ in session.execute(select(Bank.code, Bank.id))}
        self.time_zones = {
            name: id_ for name, id_ in session.execute(select(TimeZone.name, TimeZone.id))
        }


def _id_by(session: Session, model: Any, code: str) -> int:
    found = session.scalars(select(model.id).where(model.code == code)).one_or_none()
    if found is None:
        raise LookupError(f"reference data missing: {model.__tablename__}.{code}")
    return int(found)


def _create_store(
    session: Session, refs: _References, spec: _StoreSpec, actor_user_id: int
) -> tuple[DemoLogin, DemoStore]:
    password = generate_password()
    user = create_user(
        session,
        email=demo_email(spec.merchant),
        password=password,
        role=Role.MERCHANT,
        first_name="Demo",
        last_name=spec.merchant.capitalize(),
        company_name=spec.company,
        is_verified=True,
    )
    merchant = session.scalars(select(Merchant).where(Merchant.user_id == user.id)).one()
    public_key, private_key = generate_api_key_pair()
    secret = generate_callback_secret()
    store = MerchantStore(
        merchant_id=merchant.id,
        store_name=spec.store_name,
        crypto_currency_id=refs.crypto,
        fiat_currency_id=refs.fiat[spec.fiat],
        lower_limit=spec.lower,
        upper_limit=spec.upper,
        public_api_key=public_key,
        private_api_key=private_key,
        private_api_key_last4=private_key[-4:],
        callback_url=None,
        callback_secret=secret,
        pay_in_enabled=True,
        pay_out_enabled=True,
        access=True,
        trafic_access=True,
    )
    session.add(store)
    session.flush()
    session.add(
        StoreCommission(
            store_id=store.id,
            commission_payin=STORE_COMMISSION[0],
            commission_payout=STORE_COMMISSION[1],
        )
    )
    deposit_store_balance(
        session,
        store_id=store.id,
        crypto_currency_id=refs.crypto,
        amount=STORE_DEPOSIT,
        actor_user_id=actor_user_id,
        reason="demo seed: initial store balance for PayOut trials",
    )
    login = DemoLogin(email=user.email, password=password, role=Role.MERCHANT.value)
    demo_store = DemoStore(
        name=spec.store_name,
        fiat=spec.fiat,
        crypto=CRYPTO,
        public_api_key=public_key,
        private_api_key=private_key,
        callback_secret=secret,
    )
    return login, demo_store


def _create_staff(
    session: Session, local: str, role: Role, template: str, **profile_fields: Any
) -> tuple[DemoLogin, User]:
    password = generate_password()
    user = create_user(
        session,
        email=demo_email(local),
        password=password,
        role=role,
        first_name="Demo",
        last_name=local.capitalize(),
        template=template,
        **profile_fields,
    )
    return DemoLogin(email=user.email, password=password, role=role.value), user


def _create_trader(
    session: Session, refs: _References, spec: _TraderSpec, teamlead_id: int, actor_user_id: int
) -> DemoLogin:
    password = generate_password()
    user = create_user(
        session,
        email=demo_email(spec.local),
        password=password,
        role=Role.TRADER,
        first_name=spec.first_name,
        last_name=spec.last_name,
        team_lead_id=teamlead_id,
        pay_in=True,
        pay_out=True,
        in_work=True,
        is_traffic_enabled_by_teamlead=True,
        trafic_priority=spec.priority,
        time_zone_id=refs.time_zones.get(spec.time_zone),
        verification_level=1,
    )
    trader = session.scalars(select(Trader).where(Trader.user_id == user.id)).one()
    session.add(
        TraderCommission(
            trader_id=trader.id,
            commission_payin=TRADER_COMMISSION[0],
            commission_payout=TRADER_COMMISSION[1],
        )
    )
    owner = OwnerOfRequisites(
        trader_id=trader.id, first_name=spec.first_name, last_name=spec.last_name
    )
    session.add(owner)
    session.flush()
    lower, upper, total, window, day_max, concurrent = REQUISITE_LIMITS[spec.fiat]
    for bank in spec.banks:
        number = _free_card_number(session, BIN_PREFIXES[bank])
        requisite = ReqTrader(
            trader_id=trader.id,
            owner_id=owner.id,
            fiat_currency_id=refs.fiat[spec.fiat],
            payment_method_id=refs.card,
            bank_id=refs.banks[bank],
            req_number=number,
            req_last4=last4(number),
            status=RequisiteStatus.APPROVED.value,
            distribution_weight=spec.priority,
        )
        session.add(requisite)
        session.flush()
        session.add(
            FullRequisitesSettings(
                requisite_id=requisite.id,
                pay_in=True,
                pay_out=True,
                lower_limit=lower,
                upper_limit=upper,
                total_limit=total,
                turnover_limit_minutes=window,
                turnover_day_max=day_max,
                max_concurrent_orders=concurrent,
            )
        )
    session.flush()
    deposit_trader_balance(
        session,
        trader_id=trader.id,
        crypto_currency_id=refs.crypto,
        amount=TRADER_DEPOSIT,
        actor_user_id=actor_user_id,
        reason="demo seed: initial trader deposit",
    )
    return DemoLogin(email=user.email, password=password, role=Role.TRADER.value)


def point_demo_stores_at(session: Session, callback_url: str | None) -> int:
    """Set every demo store's callback URL (the local webhook inbox); returns how many changed."""
    stores = session.scalars(
        select(MerchantStore)
        .join(Merchant, Merchant.id == MerchantStore.merchant_id)
        .join(User, User.id == Merchant.user_id)
        .where(User.email.in_(DEMO_EMAILS))
    ).all()
    changed = 0
    for store in stores:
        if store.callback_url != callback_url:
            store.callback_url = callback_url
            changed += 1
    session.flush()
    return changed
