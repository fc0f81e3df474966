"""Admin-side balance moves: deposits, withdrawals and adjustments with their history and audit rows."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from jivapay.database.models import (
    AuditLog,
    BalancePlatform,
    BalancePlatformHistory,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    CryptoCurrency,
    FiatCurrency,
    Merchant,
    MerchantStore,
    Trader,
)
from jivapay.enums import Role
from jivapay.security import generate_api_key_pair, generate_callback_secret
from jivapay.seeds.reference import seed_reference
from jivapay.services.auth_service import create_user
from jivapay.services.balance_manager import (
    BalanceChange,
    adjust_balance,
    deposit_store_balance,
    deposit_trader_balance,
    withdraw_store_balance,
    withdraw_trader_balance,
)
from jivapay.utils.exceptions import InsufficientBalance, NotFound, ValidationFailed


def _world(session: Session, unique: str) -> tuple[int, int, int, int]:
    """Reference data, an admin, a trader and a store: (admin user id, trader id, store id, usdt id)."""
    seed_reference(session)
    admin = create_user(
        session, email=f"admin-{unique}@t.local", password="pw-123456", role=Role.ADMIN
    )
    trader_user = create_user(
        session, email=f"trader-{unique}@t.local", password="pw-123456", role=Role.TRADER
    )
    merchant_user = create_user(
        session, email=f"merchant-{unique}@t.local", password="pw-123456", role=Role.MERCHANT
    )
    trader = session.scalars(select(Trader).where(Trader.user_id == trader_user.id)).one()
    merchant = session.scalars(select(Merchant).where(Merchant.user_id == merchant_user.id)).one()
    usdt = session.scalars(select(CryptoCurrency.id).where(CryptoCurrency.code == "USDT")).one()
    rub = session.scalars(select(FiatCurrency.id).where(FiatCurrency.code == "RUB")).one()
    public, private = generate_api_key_pair()
    store = MerchantStore(
        merchant_id=merchant.id,
        store_name=f"store-{unique}",
        crypto_currency_id=usdt,
        fiat_currency_id=rub,
        lower_limit=Decimal("1"),
        upper_limit=Decimal("1000"),
        public_api_key=public,
        private_api_key=private,
        private_api_key_last4=private[-4:],
        callback_secret=generate_callback_secret(),
    )
    session.add(store)
    session.flush()
    return admin.id, trader.id, store.id, usdt


def _trader_state(session: Session, trader_id: int) -> tuple[BalanceTrader, list[Decimal]]:
    balance = session.scalars(
        select(BalanceTrader)
        .where(BalanceTrader.trader_id == trader_id)
        .execution_options(populate_existing=True)
    ).one()
    amounts = list(
        session.scalars(
            select(BalanceTraderCryptoHistory.amount)
            .where(BalanceTraderCryptoHistory.balance_trader_id == balance.id)
            .order_by(BalanceTraderCryptoHistory.id)
        )
    )
    return balance, amounts


def test_trader_deposit_withdraw_adjust_keep_history_consistent(db: Session, unique: str) -> None:
    admin_id, trader_id, _, usdt = _world(db, unique)

    first = deposit_trader_balance(
        db,
        trader_id=trader_id,
        crypto_currency_id=usdt,
        amount=Decimal("100.12345678"),
        actor_user_id=admin_id,
        reason="initial deposit",
    )
    assert isinstance(first, BalanceChange)
    assert first.balance_after == Decimal("100.12345678") and first.frozen_after == 0
    withdraw_trader_balance(
        db,
        trader_id=trader_id,
        crypto_currency_id=usdt,
        amount=Decimal("30"),
        actor_user_id=admin_id,
        reason="payout to trader wallet",
    )
    last = adjust_balance(
        db,
        account="trader",
        account_id=trader_id,
        crypto_currency_id=usdt,
        amount=Decimal("-0.12345678"),
        actor_user_id=admin_id,
        reason="rounding correction",
    )

    balance, amounts = _trader_state(db, trader_id)
    assert balance.balance == Decimal("70") == last.balance_after
    assert amounts == [Decimal("100.12345678"), Decimal("-30"), Decimal("-0.12345678")]
    assert sum(amounts) == balance.balance
    rows = db.scalars(
        select(BalanceTraderCryptoHistory).order_by(BalanceTraderCryptoHistory.id)
    ).all()
    assert [r.operation for r in rows] == ["deposit", "withdrawal", "adjustment"]
    assert [r.balance_after for r in rows] == [Decimal("100.12345678"), Decimal("70.12345678"), 70]
    assert all(r.actor_user_id == admin_id and r.incoming_order_id is None for r in rows)
    assert rows[1].reason == "payout to trader wallet"
    assert last.history_id == rows[-1].id and last.balance_id == balance.id
    audits = db.scalars(
        select(AuditLog).where(AuditLog.action.like("balance.%")).order_by(AuditLog.id)
    ).all()
    assert [a.action for a in audits] == [
        "balance.deposit",
        "balance.withdrawal",
        "balance.adjustment",
    ]
    assert audits[0].user_id == admin_id and audits[0].details["reason"] == "initial deposit"
    assert (audits[0].target_entity, audits[0].target_id) == ("balance_trader", str(balance.id))
    assert audits[0].details == {
        "account": "trader",
        "account_id": trader_id,
        "crypto_currency_id": usdt,
        "amount": "100.12345678",
        "balance_after": "100.12345678",
        "frozen_after": "0E-8",
        "history_id": rows[0].id,
        "reason": "initial deposit",
    }
    assert audits[1].details["amount"] == "-30"


def test_store_and_platform_accounts(db: Session, unique: str) -> None:
    admin_id, _, store_id, usdt = _world(db, unique)

    deposit_store_balance(
        db,
        store_id=store_id,
        crypto_currency_id=usdt,
        amount=Decimal("50"),
        actor_user_id=admin_id,
        reason="top-up",
    )
    change = withdraw_store_balance(
        db,
        store_id=store_id,
        crypto_currency_id=usdt,
        amount=Decimal("20.5"),
        actor_user_id=admin_id,
        reason="settlement",
    )
    store_balance = db.get(BalanceStore, change.balance_id)
    assert store_balance is not None and store_balance.balance == Decimal("29.5")
    total = db.scalar(
        select(func.sum(BalanceStoreHistory.amount)).where(
            BalanceStoreHistory.balance_store_id == change.balance_id
        )
    )
    assert total == Decimal("29.5")
    rows = db.scalars(
        select(BalanceStoreHistory)
        .where(BalanceStoreHistory.balance_store_id == change.balance_id)
        .order_by(BalanceStoreHistory.id)
    ).all()
    # Both store moves name the acting admin, their operation and their reason.
    assert [(r.operation, r.amount, r.actor_user_id, r.reason) for r in rows] == [
        ("deposit", Decimal("50"), admin_id, "top-up"),
        ("withdrawal", Decimal("-20.5"), admin_id, "settlement"),
    ]

    platform = adjust_balance(
        db,
        account="platform",
        account_id=None,
        crypto_currency_id=usdt,
        amount=Decimal("12.5"),
        actor_user_id=admin_id,
        reason="opening profit",
    )
    assert platform.balance_after == Decimal("12.5") and platform.frozen_after == 0
    assert db.get(BalancePlatform, platform.balance_id).balance == Decimal("12.5")  # type: ignore[union-attr]
    history = db.get(BalancePlatformHistory, platform.history_id)
    assert history is not None and history.operation == "adjustment"
    with pytest.raises(InsufficientBalance):
        adjust_balance(
            db,
            account="platform",
            account_id=None,
            crypto_currency_id=usdt,
            amount=Decimal("-13"),
            actor_user_id=admin_id,
            reason="too much",
        )


def test_overdraw_is_refused_and_writes_nothing(db: Session, unique: str) -> None:
    admin_id, trader_id, store_id, usdt = _world(db, unique)
    deposit_trader_balance(
        db,
        trader_id=trader_id,
        crypto_currency_id=usdt,
        amount=Decimal("10"),
        actor_user_id=admin_id,
        reason="deposit",
    )
    with pytest.raises(InsufficientBalance):
        withdraw_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=usdt,
            amount=Decimal("10.00000001"),
            actor_user_id=admin_id,
            reason="too much",
        )
    with pytest.raises(InsufficientBalance):
        withdraw_store_balance(
            db,
            store_id=store_id,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason="empty store",
        )
    balance, amounts = _trader_state(db, trader_id)
    assert balance.balance == Decimal("10") and amounts == [Decimal("10")]


def test_frozen_money_cannot_be_withdrawn(db: Session, unique: str) -> None:
    admin_id, trader_id, _, usdt = _world(db, unique)
    change = deposit_trader_balance(
        db,
        trader_id=trader_id,
        crypto_currency_id=usdt,
        amount=Decimal("10"),
        actor_user_id=admin_id,
        reason="deposit",
    )
    # An open order holds 7 (holds arrive with a later issue; set it directly here).
    db.execute(
        text("UPDATE balance_traders SET frozen = 7 WHERE id = :id"), {"id": change.balance_id}
    )
    with pytest.raises(
        InsufficientBalance, match=r"^available balance 3\.0+ does not cover 3\.5$"
    ) as err:
        withdraw_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=usdt,
            amount=Decimal("3.5"),
            actor_user_id=admin_id,
            reason="more than available",
        )
    # What a 409 answer carries: what is available (balance minus frozen) and what was asked.
    assert err.value.extra == {"available": "3.00000000", "requested": "3.5"}
    ok = withdraw_trader_balance(
        db,
        trader_id=trader_id,
        crypto_currency_id=usdt,
        amount=Decimal("3"),
        actor_user_id=admin_id,
        reason="exactly available",
    )
    assert ok.balance_after == Decimal("7") and ok.frozen_after == Decimal("7")


POSITIVE = "amount must be greater than zero"
PLACES = "amount must have at most 8 decimal places"
FINITE = "amount must be a finite number"
DECIMAL = "amount must be a Decimal"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (Decimal("0"), POSITIVE),
        (Decimal("-1"), POSITIVE),
        (Decimal("0.000000001"), PLACES),
        (Decimal("1.123456789"), PLACES),
        (Decimal("NaN"), FINITE),
        (Decimal("Infinity"), FINITE),
        (Decimal("1e12"), "amount is too large"),  # NUMERIC(20, 8) holds at most 12 digits
        (Decimal("-1e12"), "amount is too large"),
        (1.5, DECIMAL),
        (5, DECIMAL),
        ("5", DECIMAL),
        (True, DECIMAL),
    ],
)
def test_bad_amounts_are_refused(db: Session, unique: str, amount: object, message: str) -> None:
    admin_id, trader_id, _, usdt = _world(db, unique)
    with pytest.raises(ValidationFailed, match=f"^{message}$"):
        deposit_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=usdt,
            amount=amount,  # type: ignore[arg-type]
            actor_user_id=admin_id,
            reason="bad",
        )
    with pytest.raises(ValidationFailed, match=f"^{message}$"):
        withdraw_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=usdt,
            amount=amount,  # type: ignore[arg-type]
            actor_user_id=admin_id,
            reason="bad",
        )
    assert db.scalar(select(func.count()).select_from(BalanceTraderCryptoHistory)) == 0


def test_the_largest_amount_passes_and_a_balance_past_it_is_refused(
    db: Session, unique: str
) -> None:
    admin_id, trader_id, _, usdt = _world(db, unique)
    largest = Decimal("999999999999.99999999")
    change = deposit_trader_balance(
        db,
        trader_id=trader_id,
        crypto_currency_id=usdt,
        amount=largest,
        actor_user_id=admin_id,
        reason="edge",
    )
    assert change.balance_after == largest
    # One unit more no longer fits the column: a validation error, not a database overflow.
    with pytest.raises(
        ValidationFailed, match=r"^the balance would exceed the largest amount it can hold$"
    ):
        deposit_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=usdt,
            amount=Decimal("0.00000001"),
            actor_user_id=admin_id,
            reason="one unit too many",
        )
    balance, amounts = _trader_state(db, trader_id)
    assert balance.balance == largest and amounts == [largest]


def test_adjustment_validation(db: Session, unique: str) -> None:
    admin_id, trader_id, _, usdt = _world(db, unique)
    for amount in (Decimal("0"), Decimal("-0.000000001")):
        with pytest.raises(ValidationFailed):
            adjust_balance(
                db,
                account="trader",
                account_id=trader_id,
                crypto_currency_id=usdt,
                amount=amount,
                actor_user_id=admin_id,
                reason="bad",
            )
    with pytest.raises(ValidationFailed, match=r"^an adjustment must not be zero$"):
        adjust_balance(
            db,
            account="trader",
            account_id=trader_id,
            crypto_currency_id=usdt,
            amount=Decimal("0"),
            actor_user_id=admin_id,
            reason="bad",
        )
    with pytest.raises(ValidationFailed, match=r"^unknown balance account kind: 'nope'$"):
        adjust_balance(
            db,
            account="nope",  # type: ignore[arg-type]
            account_id=trader_id,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason="bad kind",
        )
    with pytest.raises(
        ValidationFailed, match=r"^account_id is required for store and trader balances$"
    ):
        adjust_balance(
            db,
            account="store",
            account_id=None,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason="no id",
        )
    assert db.scalar(select(func.count()).select_from(BalanceStoreHistory)) == 0


def test_a_store_adjustment_moves_the_store_balance_both_ways(db: Session, unique: str) -> None:
    admin_id, _, store_id, usdt = _world(db, unique)
    up = adjust_balance(
        db,
        account="store",
        account_id=store_id,
        crypto_currency_id=usdt,
        amount=Decimal("7.25"),
        actor_user_id=admin_id,
        reason="missed top-up",
    )
    down = adjust_balance(
        db,
        account="store",
        account_id=store_id,
        crypto_currency_id=usdt,
        amount=Decimal("-2"),
        actor_user_id=admin_id,
        reason="double credit",
    )
    assert (up.balance_after, down.balance_after) == (Decimal("7.25"), Decimal("5.25"))
    assert up.balance_id == down.balance_id
    balance = db.get(BalanceStore, up.balance_id)
    assert (
        balance is not None and balance.store_id == store_id and balance.balance == Decimal("5.25")
    )
    rows = db.scalars(
        select(BalanceStoreHistory)
        .where(BalanceStoreHistory.balance_store_id == up.balance_id)
        .order_by(BalanceStoreHistory.id)
    ).all()
    assert [(r.operation, r.amount, r.actor_user_id) for r in rows] == [
        ("adjustment", Decimal("7.25"), admin_id),
        ("adjustment", Decimal("-2"), admin_id),
    ]


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_reason_is_required(db: Session, unique: str, reason: object) -> None:
    admin_id, trader_id, store_id, usdt = _world(db, unique)
    with pytest.raises(
        ValidationFailed, match=r"^a reason is required for a manual balance change$"
    ):
        deposit_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason=reason,  # type: ignore[arg-type]
        )
    with pytest.raises(
        ValidationFailed, match=r"^a reason is required for a manual balance change$"
    ):
        adjust_balance(
            db,
            account="store",
            account_id=store_id,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason=reason,  # type: ignore[arg-type]
        )
    assert db.scalar(select(func.count()).select_from(BalanceTrader)) == 0


def test_a_reason_of_2000_characters_passes_and_one_more_does_not(db: Session, unique: str) -> None:
    admin_id, trader_id, _, usdt = _world(db, unique)
    with pytest.raises(ValidationFailed, match=r"^reason must be at most 2000 characters$"):
        deposit_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason="r" * 2001,
        )
    # Surrounding blanks do not count: the stored reason is stripped.
    change = deposit_trader_balance(
        db,
        trader_id=trader_id,
        crypto_currency_id=usdt,
        amount=Decimal("1"),
        actor_user_id=admin_id,
        reason=f"  {'r' * 2000}  ",
    )
    row = db.get(BalanceTraderCryptoHistory, change.history_id)
    assert row is not None and row.reason == "r" * 2000


def test_an_unknown_actor_is_not_found_and_nothing_moves(db: Session, unique: str) -> None:
    _, trader_id, _, usdt = _world(db, unique)
    with pytest.raises(NotFound, match=r"^user 987654 not found$"):
        deposit_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=987654,
            reason="ghost admin",
        )
    assert db.scalar(select(func.count()).select_from(BalanceTraderCryptoHistory)) == 0


def test_unknown_accounts_are_not_found(db: Session, unique: str) -> None:
    admin_id, trader_id, _, usdt = _world(db, unique)
    with pytest.raises(NotFound, match=rf"^trader {trader_id + 10_000} not found$"):
        deposit_trader_balance(
            db,
            trader_id=trader_id + 10_000,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason="ghost",
        )
    with pytest.raises(NotFound, match=r"^store 987654 not found$"):
        deposit_store_balance(
            db,
            store_id=987654,
            crypto_currency_id=usdt,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason="ghost",
        )
    with pytest.raises(NotFound, match=r"^crypto currency 987654 not found$"):
        deposit_trader_balance(
            db,
            trader_id=trader_id,
            crypto_currency_id=987654,
            amount=Decimal("1"),
            actor_user_id=admin_id,
            reason="ghost currency",
        )


def test_concurrent_deposits_are_exact(committed_db: sessionmaker[Session], unique: str) -> None:
    with committed_db() as session:
        admin_id, trader_id, _, usdt = _world(session, unique)
        session.commit()

    amount = Decimal("1.00000001")
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        try:
            start.wait()
            for _ in range(50):
                with committed_db() as s:
                    deposit_trader_balance(
                        s,
                        trader_id=trader_id,
                        crypto_currency_id=usdt,
                        amount=amount,
                        actor_user_id=admin_id,
                        reason="concurrent deposit",
                    )
                    s.commit()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    with committed_db() as session:
        balance, amounts = _trader_state(session, trader_id)
        assert balance.balance == amount * 100 == Decimal("100.00000100")
        assert len(amounts) == 100 and sum(amounts) == balance.balance
        afters = sorted(
            session.scalars(
                select(BalanceTraderCryptoHistory.balance_after).where(
                    BalanceTraderCryptoHistory.balance_trader_id == balance.id
                )
            )
        )
        # Serialised by the row lock: every intermediate balance appears exactly once.
        assert afters == [amount * i for i in range(1, 101)]
