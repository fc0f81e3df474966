"""Seeds: idempotency, the once-only admin password, reference data, and a usable demo world."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jivapay.config import reset_settings_cache
from jivapay.database.models import (
    Admin,
    AvailableBankMethod,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    Bank,
    Base,
    ConfigurationSetting,
    CryptoCurrency,
    ExchangeRate,
    FiatCurrency,
    MerchantStore,
    ReqTrader,
    RoleModel,
    StoreCommission,
    Support,
    TeamLead,
    Trader,
    TraderCommission,
    User,
)
from jivapay.enums import RateSource, RequisiteStatus, Role
from jivapay.permissions import ROLE_TEMPLATES
from jivapay.security import verify_password
from jivapay.seeds import SeedReport, run_seed, write_credentials
from jivapay.seeds.demo import DEMO_EMAILS
from jivapay.utils.config_loader import SETTINGS


@pytest.fixture(autouse=True)
def _admin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("JIVAPAY_ADMIN_EMAIL", "root@seed-test.local")
    monkeypatch.delenv("JIVAPAY_ADMIN_PASSWORD", raising=False)
    reset_settings_cache()
    yield
    reset_settings_cache()


def _counts(session: Session) -> dict[str, int]:
    session.flush()
    return {
        t.name: session.execute(text(f'SELECT count(*) FROM "{t.name}"')).scalar_one()
        for t in Base.metadata.sorted_tables
    }


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def test_second_run_changes_nothing(db: Session) -> None:
    first = run_seed(db, demo=True)
    after_first = _counts(db)
    second = run_seed(db, demo=True)
    after_second = _counts(db)

    assert after_second == after_first
    assert first.demo_status == "created" and second.demo_status == "exists"
    assert second.total_created == 0
    assert first.created["roles"] == 5 and first.created["admin"] == 1
    assert after_first["req_traders"] == 12
    assert after_first["users"] == 1 + len(DEMO_EMAILS)


def test_admin_password_generated_once_and_verifies(db: Session) -> None:
    first = run_seed(db)
    second = run_seed(db)

    assert first.admin_email == "root@seed-test.local"
    assert first.admin_password and len(first.admin_password) >= 16
    assert second.admin_password is None
    admin = db.scalars(select(User).where(User.email == "root@seed-test.local")).one()
    assert admin.role == Role.ADMIN.value
    assert verify_password(first.admin_password, admin.password_hash)
    profile = db.scalars(select(Admin).where(Admin.user_id == admin.id)).one()
    assert profile.granted_permissions == ["superuser"]


def test_admin_password_from_environment_is_not_reported(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JIVAPAY_ADMIN_PASSWORD", "env-chosen-password-123")
    reset_settings_cache()
    report = run_seed(db)
    assert report.admin_password is None
    admin = db.scalars(select(User).where(User.email == "root@seed-test.local")).one()
    assert verify_password("env-chosen-password-123", admin.password_hash)


def test_existing_admin_password_is_not_reset(db: Session) -> None:
    first = run_seed(db)
    admin = db.scalars(select(User).where(User.email == "root@seed-test.local")).one()
    original_hash = admin.password_hash
    run_seed(db)
    db.refresh(admin)
    assert admin.password_hash == original_hash
    assert first.admin_password is not None


def test_settings_roles_and_reference_data(db: Session) -> None:
    run_seed(db)
    keys = set(db.scalars(select(ConfigurationSetting.key)))
    assert set(SETTINGS) <= keys
    roles = {r.name: r.description for r in db.scalars(select(RoleModel))}
    assert set(roles) == {r.value for r in Role} and all(roles.values())
    assert {"RUB", "KZT", "USD"} <= set(db.scalars(select(FiatCurrency.code)))
    usdt = db.scalars(select(CryptoCurrency).where(CryptoCurrency.code == "USDT")).one()
    assert usdt.network == "TRC20"
    assert {"sberbank", "kaspi", "chase"} <= set(db.scalars(select(Bank.code)))
    assert (db.scalar(select(func.count()).select_from(AvailableBankMethod)) or 0) > 0
    rates = db.scalars(select(ExchangeRate)).all()
    assert len(rates) == 3
    for rate in rates:
        assert rate.source == RateSource.SEED.value
        assert isinstance(rate.median_rate, Decimal)
        assert rate.buy_rate <= rate.median_rate <= rate.sell_rate


def test_admin_edits_survive_a_rerun(db: Session) -> None:
    run_seed(db)
    rub = db.scalars(select(FiatCurrency).where(FiatCurrency.code == "RUB")).one()
    rate = db.scalars(select(ExchangeRate).where(ExchangeRate.fiat_currency_id == rub.id)).one()
    rate.median_rate = Decimal("101.25000000")
    rate.source = RateSource.MANUAL.value
    bank = db.scalars(select(Bank).where(Bank.code == "sberbank")).one()
    bank.name = "Sber (renamed by admin)"
    db.flush()

    run_seed(db)
    db.expire_all()
    rate = db.scalars(select(ExchangeRate).where(ExchangeRate.fiat_currency_id == rub.id)).one()
    assert rate.median_rate == Decimal("101.25")
    assert rate.source == RateSource.MANUAL.value
    assert db.scalars(select(Bank.name).where(Bank.code == "sberbank")).one() == (
        "Sber (renamed by admin)"
    )


def test_demo_credentials_work(db: Session) -> None:
    report = run_seed(db, demo=True)
    assert report.demo is not None and report.demo.fresh
    db.expire_all()

    by_email = {u.email: u for u in db.scalars(select(User).where(User.email.in_(DEMO_EMAILS)))}
    assert len(report.demo.logins) == len(DEMO_EMAILS) == len(by_email)
    passwords = set()
    for login in report.demo.logins:
        assert login.password
        user = by_email[login.email]
        assert user.role == login.role
        assert verify_password(login.password, user.password_hash)
        passwords.add(login.password)
    assert len(passwords) == len(report.demo.logins)  # random, not one shared password

    assert len(report.demo.stores) == 2
    for demo_store in report.demo.stores:
        store = db.scalars(
            select(MerchantStore).where(MerchantStore.public_api_key == demo_store.public_api_key)
        ).one()
        assert store.private_api_key == demo_store.private_api_key
        assert store.callback_secret == demo_store.callback_secret
        assert store.private_api_key_last4 == demo_store.private_api_key[-4:]
        assert store.trafic_access and store.access and store.pay_in_enabled
        assert store.pay_out_enabled and store.callback_url is None
        raw = db.execute(
            text("SELECT private_api_key, callback_secret FROM merchant_stores WHERE id = :id"),
            {"id": store.id},
        ).one()
        assert demo_store.private_api_key not in raw[0]
        assert demo_store.callback_secret not in raw[1]
    assert {s.fiat for s in report.demo.stores} == {"RUB", "KZT"}
    assert report.demo.gateway_url.endswith("/gateway")


def test_demo_world_shape(db: Session) -> None:
    run_seed(db, demo=True)
    db.expire_all()

    teamlead = db.scalars(select(TeamLead)).one()
    assert teamlead.granted_permissions == list(ROLE_TEMPLATES["teamlead"])
    support = db.scalars(select(Support)).one()
    assert support.granted_permissions == list(ROLE_TEMPLATES["support_orders"])

    traders = db.scalars(select(Trader)).all()
    assert len(traders) == 6
    assert all(t.team_lead_id == teamlead.id and t.in_work for t in traders)
    for trader in traders:
        commission = db.scalars(
            select(TraderCommission).where(TraderCommission.trader_id == trader.id)
        ).one()
        assert commission.commission_payin > 0
        balance = db.scalars(
            select(BalanceTrader).where(BalanceTrader.trader_id == trader.id)
        ).one()
        assert balance.balance == Decimal("5000") and balance.frozen == 0
        history = db.scalars(
            select(BalanceTraderCryptoHistory).where(
                BalanceTraderCryptoHistory.balance_trader_id == balance.id
            )
        ).all()
        assert [h.amount for h in history] == [Decimal("5000")]
        assert history[0].operation == "deposit" and history[0].actor_user_id is not None
    store_commissions = db.scalars(select(StoreCommission)).all()
    assert len(store_commissions) == 2
    lowest_store_payin = min(c.commission_payin for c in store_commissions)
    lowest_store_payout = min(c.commission_payout for c in store_commissions)
    assert all(
        c.commission_payin < lowest_store_payin and c.commission_payout < lowest_store_payout
        for c in db.scalars(select(TraderCommission))
    )
    for store_balance in db.scalars(select(BalanceStore)):
        assert store_balance.balance == Decimal("1000")
        total = db.scalar(
            select(func.sum(BalanceStoreHistory.amount)).where(
                BalanceStoreHistory.balance_store_id == store_balance.id
            )
        )
        assert total == store_balance.balance


def test_demo_requisites_are_approved_and_encrypted(db: Session) -> None:
    run_seed(db, demo=True)
    db.expire_all()

    requisites = db.scalars(select(ReqTrader)).all()
    assert len(requisites) == 12
    numbers = []
    for req in requisites:
        assert req.status == RequisiteStatus.APPROVED.value
        assert len(req.req_number) == 16 and req.req_number.isdigit()
        assert _luhn_ok(req.req_number)
        assert req.req_last4 == req.req_number[-4:]
        assert req.settings is not None
        assert req.settings.pay_in and req.settings.pay_out
        assert req.settings.lower_limit < req.settings.upper_limit
        assert req.settings.total_limit and req.settings.turnover_limit_minutes
        assert req.settings.turnover_day_max and req.settings.max_concurrent_orders
        assert req.owner.first_name
        numbers.append(req.req_number)

    raw = [row[0] for row in db.execute(text("SELECT req_number FROM req_traders"))]
    assert len(raw) == 12
    blob = " ".join(raw)
    for number in numbers:
        assert number not in blob


def test_credentials_file_is_private_and_kept_on_rerun(db: Session, tmp_path: Path) -> None:
    path = tmp_path / "home" / "demo-credentials.json"
    first = run_seed(db, demo=True)
    write_credentials(first, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["complete"] is True
    assert {login["email"] for login in saved["logins"]} == set(DEMO_EMAILS)
    assert all(login["password"] for login in saved["logins"])
    assert {s["private_api_key"] for s in saved["stores"]} == {
        s.private_api_key
        for s in first.demo.stores  # type: ignore[union-attr]
    }

    before = path.read_bytes()
    second = run_seed(db, demo=True)
    write_credentials(second, path)
    assert path.read_bytes() == before  # the first run's passwords stay available


def test_credentials_rederived_when_file_lost(db: Session, tmp_path: Path) -> None:
    first = run_seed(db, demo=True)
    second = run_seed(db, demo=True)
    assert second.demo is not None and not second.demo.fresh
    assert {s.private_api_key for s in second.demo.stores} == {
        s.private_api_key
        for s in first.demo.stores  # type: ignore[union-attr]
    }
    path = tmp_path / "creds.json"
    write_credentials(second, path)
    saved = json.loads(path.read_text())
    assert saved["complete"] is False
    assert all(login["password"] is None for login in saved["logins"])
    assert len(saved["stores"]) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_demo_means_no_credentials_file(db: Session, tmp_path: Path) -> None:
    report = run_seed(db)
    assert isinstance(report, SeedReport) and report.demo is None
    assert report.demo_status == "not_requested"
    write_credentials(report, tmp_path / "creds.json")
    assert not (tmp_path / "creds.json").exists()
    assert db.scalar(select(func.count()).select_from(MerchantStore)) == 0


def test_demo_requisites_skip_a_number_another_trader_holds(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drawn card number already in use is drawn again: a number has one trader."""
    from jivapay.database.types import fingerprint
    from jivapay.seeds import demo
    from tests.factories import make_reference, make_requisite, make_trader

    ref = make_reference(db)
    held = make_requisite(db, make_trader(db, ref, deposit=None), ref)
    real = demo.luhn_card_number
    first = iter([held.req_number])
    monkeypatch.setattr(demo, "luhn_card_number", lambda prefix: next(first, None) or real(prefix))
    run_seed(db, demo=True)

    assert db.scalar(select(func.count()).select_from(ReqTrader)) == 13
    holders = db.scalars(
        select(ReqTrader.trader_id).where(ReqTrader.req_number_hash == fingerprint(held.req_number))
    ).all()
    assert holders == [held.trader_id]
