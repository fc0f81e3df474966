"""Order money moves of balance_manager, edge by edge: holds at and past the available amount,
releases, completion of several orders into the same accounts, the signs and operations of every
history row, and that each balance stays equal to the sum of its history (property-tested)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from jivapay.database.models import (
    BalancePlatform,
    BalancePlatformHistory,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    BalanceTraderFiat,
    BalanceTraderFiatHistory,
    OrderHistory,
)
from jivapay.enums import BalanceOperation, OrderType
from jivapay.services import balance_manager as bm
from jivapay.services.order_processor import process_incoming_order
from jivapay.utils.exceptions import InsufficientBalance, InvariantViolation, ValidationFailed
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

D = Decimal


@pytest.fixture
def world(db: Session):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, payin_percent=D("5"), payout_percent=D("3"), balance=D("500"))
    trader = make_trader(db, ref, payin_percent=D("3"), payout_percent=D("1"), deposit=D("1000"))
    make_requisite(db, trader, ref)
    return ref, store, trader


def _fresh(db: Session, model, **key):  # type: ignore[no-untyped-def]
    return db.scalars(
        select(model).filter_by(**key).execution_options(populate_existing=True)
    ).one()


def _assign(
    db: Session, world, amount: str, order_type: OrderType = OrderType.PAYIN
) -> OrderHistory:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    incoming = make_incoming(db, store, ref, amount_fiat=D(amount), order_type=order_type)
    result = process_incoming_order(incoming.id)
    assert result.outcome == "assigned", result
    order = db.get(OrderHistory, result.order_id)
    assert order is not None
    return order


def _hold(  # type: ignore[no-untyped-def]
    db: Session, ref, trader_id: int, amount: Decimal, incoming_order_id: int, order_id=None
) -> None:
    """A trader hold taken on its own (`freeze_trader_hold`), as an assignment's would be."""
    bm.freeze_trader_hold(
        db,
        trader_id=trader_id,
        crypto_currency_id=ref.crypto.id,
        amount=amount,
        incoming_order_id=incoming_order_id,
        order_id=order_id,
    )


# --------------------------------------------------------------------------- holds


def test_a_hold_of_exactly_the_available_amount_passes_and_one_unit_more_does_not(
    db: Session, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    # A first hold leaves 1000 - 400 = 600 available.
    _hold(db, ref, trader.id, D("400"), make_incoming(db, store, ref).id)
    second = make_incoming(db, store, ref)
    with pytest.raises(
        InsufficientBalance, match=r"available balance 600\.0+ does not cover 600\.00000001"
    ) as err:
        _hold(db, ref, trader.id, D("600.00000001"), second.id)
    assert err.value.extra == {"available": "600.00000000", "requested": "600.00000001"}
    _hold(db, ref, trader.id, D("600"), second.id)
    deposit = _fresh(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("1000"), D("1000"))


def test_a_trader_hold_names_its_intake_and_order_in_the_history(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    order = _assign(db, world, "100")
    incoming = make_incoming(db, store, ref)
    _hold(db, ref, trader.id, D("3.5"), incoming.id, order_id=order.id)
    row = db.scalars(
        select(BalanceTraderCryptoHistory).where(
            BalanceTraderCryptoHistory.frozen_delta == D("3.5")
        )
    ).one()
    assert (row.operation, row.amount) == ("freeze", 0)
    assert row.frozen_after == order.hold_amount + D("3.5")
    assert (row.incoming_order_id, row.order_id) == (incoming.id, order.id)


def test_a_hold_on_an_account_that_does_not_exist_reports_zero_available(
    db: Session, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    other = make_trader(db, ref, deposit=None)
    with pytest.raises(InsufficientBalance) as err:
        _hold(db, ref, other.id, D("1"), make_incoming(db, store, ref).id)
    assert err.value.extra == {"available": "0", "requested": "1"}


@pytest.mark.parametrize("amount", [D("0"), D("-1")])
def test_a_hold_must_be_positive(db: Session, world, amount: Decimal) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    with pytest.raises(ValidationFailed, match=r"^a hold must be positive$"):
        bm.freeze_store_hold(
            db,
            store_id=store.store.id,
            crypto_currency_id=ref.crypto.id,
            amount=amount,
            incoming_order_id=make_incoming(db, store, ref).id,
        )


def test_hold_and_release_history_rows_carry_their_order(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("1000.00"), order_type=OrderType.PAYOUT)
    rows = db.scalars(
        select(BalanceStoreHistory).where(BalanceStoreHistory.incoming_order_id == incoming.id)
    ).all()
    assert [(r.operation, r.amount, r.frozen_delta) for r in rows] == [
        (BalanceOperation.FREEZE.value, D("0"), incoming.store_hold)
    ]
    bm.release_store_hold(
        db,
        store_id=store.store.id,
        crypto_currency_id=ref.crypto.id,
        amount=incoming.store_hold,
        incoming_order_id=incoming.id,
        order_id=None,
    )
    release = db.scalars(
        select(BalanceStoreHistory).where(
            BalanceStoreHistory.incoming_order_id == incoming.id,
            BalanceStoreHistory.operation == BalanceOperation.RELEASE.value,
        )
    ).one()
    assert (release.amount, release.frozen_delta, release.frozen_after) == (
        D("0"),
        -incoming.store_hold,
        D("0"),
    )
    assert release.balance_after == D("500")


def test_trader_holds_and_releases_carry_the_intake_and_the_assigned_order(
    db: Session, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    payin = _assign(db, world, "1000.00")
    bm.release_trader_hold(
        db,
        trader_id=trader.id,
        crypto_currency_id=ref.crypto.id,
        amount=payin.hold_amount,
        incoming_order_id=payin.incoming_order_id,
        order_id=payin.id,
    )
    rows = db.scalars(
        select(BalanceTraderCryptoHistory)
        .where(BalanceTraderCryptoHistory.operation.in_(["freeze", "release"]))
        .where(
            BalanceTraderCryptoHistory.balance_trader_id
            == _fresh(db, BalanceTrader, trader_id=trader.id).id
        )
        .order_by(BalanceTraderCryptoHistory.id)
    ).all()
    assert [(r.operation, r.incoming_order_id, r.order_id, r.frozen_delta) for r in rows] == [
        ("freeze", payin.incoming_order_id, payin.id, payin.hold_amount),
        ("release", payin.incoming_order_id, payin.id, -payin.hold_amount),
    ]
    # A PayOut's store hold is frozen at intake (no order yet) and released with its order.
    payout = _assign(db, world, "300.00", OrderType.PAYOUT)
    bm.release_store_hold(
        db,
        store_id=store.store.id,
        crypto_currency_id=ref.crypto.id,
        amount=payout.hold_amount,
        incoming_order_id=payout.incoming_order_id,
        order_id=payout.id,
    )
    store_rows = db.scalars(
        select(BalanceStoreHistory)
        .where(BalanceStoreHistory.incoming_order_id == payout.incoming_order_id)
        .order_by(BalanceStoreHistory.id)
    ).all()
    assert [(r.operation, r.order_id) for r in store_rows] == [
        ("freeze", None),
        ("release", payout.id),
    ]


def test_a_second_hold_for_the_same_order_is_refused_by_the_unique_key(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    from jivapay.utils.exceptions import DuplicateObject

    ref, store, _ = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("100.00"), order_type=OrderType.PAYOUT)
    with pytest.raises(Exception) as err, db.begin_nested():
        bm.freeze_store_hold(
            db,
            store_id=store.store.id,
            crypto_currency_id=ref.crypto.id,
            amount=D("1"),
            incoming_order_id=incoming.id,
        )
    assert isinstance(err.value, DuplicateObject) or "uq_" in str(err.value)
    assert _fresh(db, BalanceStore, store_id=store.store.id).frozen == incoming.store_hold


def test_a_balance_row_already_in_the_session_sees_the_new_frozen(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    deposit = db.scalars(select(BalanceTrader).where(BalanceTrader.trader_id == trader.id)).one()
    assert deposit.frozen == 0
    _hold(db, ref, trader.id, D("12.5"), make_incoming(db, store, ref).id)
    assert deposit.frozen == D("12.5")  # the same object, not a re-query


def test_a_hold_expires_only_its_balance_row_in_the_session(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    from jivapay.database.models import ConfigurationSetting
    from jivapay.utils.config_loader import set_config_value

    ref, store, trader = world
    # Objects of other models stay as they are; one keyed by something else than `id` must not
    # even be asked for an id.
    set_config_value(db, "CALLBACK_MAX_ATTEMPTS", 4)
    setting = db.get(ConfigurationSetting, "CALLBACK_MAX_ATTEMPTS")
    assert setting is not None
    store_balance = db.scalars(
        select(BalanceStore).where(BalanceStore.store_id == store.store.id)
    ).one()
    _hold(db, ref, trader.id, D("1"), make_incoming(db, store, ref).id)
    assert not sa_inspect(setting).expired and not sa_inspect(store_balance).expired


@pytest.mark.parametrize("amount", [D("0"), D("-1"), D("0.00000001")])
def test_releasing_zero_negative_or_more_than_frozen_is_refused(
    db: Session, world, amount: Decimal
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    with pytest.raises(
        InvariantViolation, match=r"^cannot release -?[0-9E.-]+: only 0E-8 is frozen$"
    ):
        bm.release_store_hold(
            db,
            store_id=store.store.id,
            crypto_currency_id=ref.crypto.id,
            amount=amount,
            incoming_order_id=make_incoming(db, store, ref).id,
            order_id=None,
        )
    assert _fresh(db, BalanceStore, store_id=store.store.id).frozen == 0


def test_releasing_exactly_what_is_frozen_passes(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    incoming = make_incoming(db, store, ref, amount_fiat=D("100.00"), order_type=OrderType.PAYOUT)
    with pytest.raises(InvariantViolation, match="cannot release"):
        bm.release_store_hold(
            db,
            store_id=store.store.id,
            crypto_currency_id=ref.crypto.id,
            amount=incoming.store_hold + D("0.00000001"),
            incoming_order_id=incoming.id,
            order_id=None,
        )
    bm.release_store_hold(
        db,
        store_id=store.store.id,
        crypto_currency_id=ref.crypto.id,
        amount=incoming.store_hold,
        incoming_order_id=incoming.id,
        order_id=None,
    )
    assert _fresh(db, BalanceStore, store_id=store.store.id).frozen == 0


# --------------------------------------------------------------------------- completion


def _complete(db: Session, order: OrderHistory) -> bm.CompletionMoves:
    moves = bm.complete_order(db, order=order)
    return moves


def test_two_completed_payins_accumulate_in_every_account(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    first = _assign(db, world, "1000.00")  # C = 10, s = 0.5, t = 0.3
    second = _assign(db, world, "500.00")  # C = 5, s = 0.25, t = 0.15
    m1 = _complete(db, first)
    m2 = _complete(db, second)
    assert (m1.store, m1.trader, m1.platform, m1.trader_fiat) == (
        D("9.5"),
        D("-9.7"),
        D("0.2"),
        D("1000.00"),
    )
    assert (m2.store, m2.trader, m2.platform, m2.trader_fiat) == (
        D("4.75"),
        D("-4.85"),
        D("0.1"),
        D("500.00"),
    )

    assert _fresh(db, BalanceStore, store_id=store.store.id).balance == D("500") + D("14.25")
    deposit = _fresh(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("1000") - D("14.55"), D("0"))
    assert _fresh(db, BalancePlatform, crypto_currency_id=ref.crypto.id).balance == D("0.3")
    fiat = _fresh(db, BalanceTraderFiat, trader_id=trader.id, fiat_currency_id=ref.fiat.id)
    assert fiat.balance == D("1500.00")


def test_payout_completion_moves_fiat_down_and_releases_the_store_hold(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    payin = _assign(db, world, "1000.00")
    _complete(db, payin)
    payout = _assign(db, world, "300.00", OrderType.PAYOUT)  # C = 3, s = 0.09, t = 0.03
    moves = _complete(db, payout)
    assert (moves.store, moves.trader, moves.platform, moves.trader_fiat) == (
        D("-3.09"),
        D("3.03"),
        D("0.06"),
        D("-300.00"),
    )
    balance = _fresh(db, BalanceStore, store_id=store.store.id)
    assert (balance.balance, balance.frozen) == (D("500") + D("9.5") - D("3.09"), D("0"))
    fiat = _fresh(db, BalanceTraderFiat, trader_id=trader.id, fiat_currency_id=ref.fiat.id)
    assert fiat.balance == D("700.00")
    assert _fresh(db, BalancePlatform, crypto_currency_id=ref.crypto.id).balance == D("0.26")


def test_completion_history_rows_name_their_operation_and_order(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    payin = _assign(db, world, "1000.00")
    _complete(db, payin)
    payout = _assign(db, world, "300.00", OrderType.PAYOUT)
    _complete(db, payout)
    for order, op in ((payin, BalanceOperation.PAYIN), (payout, BalanceOperation.PAYOUT)):
        keys = {"incoming_order_id": order.incoming_order_id, "order_id": order.id}
        store_ops = db.scalars(
            select(BalanceStoreHistory.operation)
            .filter_by(**keys)
            .where(BalanceStoreHistory.operation.notin_(["freeze", "release"]))
        ).all()
        trader_ops = db.scalars(
            select(BalanceTraderCryptoHistory.operation)
            .filter_by(**keys)
            .where(BalanceTraderCryptoHistory.operation.notin_(["freeze", "release"]))
        ).all()
        platform = db.scalars(select(BalancePlatformHistory).filter_by(**keys)).one()
        fiat = db.scalars(select(BalanceTraderFiatHistory).filter_by(**keys)).one()
        assert store_ops == [op.value] and trader_ops == [op.value]
        assert platform.operation == BalanceOperation.COMMISSION.value
        assert platform.amount == order.store_commission - order.trader_commission
        assert fiat.operation == op.value
        assert fiat.amount == (
            order.amount_fiat if op == BalanceOperation.PAYIN else -order.amount_fiat
        )
        held_model = (
            BalanceTraderCryptoHistory if op == BalanceOperation.PAYIN else BalanceStoreHistory
        )
        held = db.scalars(
            select(held_model).filter_by(**keys).where(held_model.operation == op.value)
        ).one()
        assert held.frozen_delta == -order.hold_amount
        free_model = (
            BalanceStoreHistory if op == BalanceOperation.PAYIN else BalanceTraderCryptoHistory
        )
        free = db.scalars(
            select(free_model).filter_by(**keys).where(free_model.operation == op.value)
        ).one()
        assert free.frozen_delta == 0  # the side that held nothing moves no frozen money


def test_legs_that_do_not_sum_to_zero_are_refused_before_any_move(
    db: Session, world, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from jivapay.money import Legs

    _, store, trader = world
    order = _assign(db, world, "1000.00")
    # Impossible with money.completion_legs; the guard refuses rather than create money.
    monkeypatch.setattr(bm, "completion_legs", lambda *_: Legs(D("9.5"), D("-9.7"), D("0.3")))
    with pytest.raises(InvariantViolation, match=r"^order legs do not sum to zero$"):
        bm.complete_order(db, order=order)
    deposit = _fresh(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("1000"), order.hold_amount)
    assert _fresh(db, BalanceStore, store_id=store.store.id).balance == D("500")


def test_a_credit_to_a_negative_platform_balance_passes_even_if_it_stays_negative(
    db: Session,
) -> None:
    # A trader commission above the store's makes the platform's leg negative (docs/money.md).
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, payin_percent=D("1"), balance=D("500"))
    trader = make_trader(db, ref, payin_percent=D("3"), deposit=D("1000"))
    make_requisite(db, trader, ref)
    order = _assign(db, (ref, store, trader), "1000.00")  # C = 10, s = 0.1, t = 0.3
    assert bm.complete_order(db, order=order).platform == D("-0.2")
    change = bm.adjust_balance(
        db,
        account="platform",
        account_id=None,
        crypto_currency_id=ref.crypto.id,
        amount=D("0.05"),
        actor_user_id=None,
        reason="partial correction",
    )
    assert change.balance_after == D("-0.15")


def test_completion_without_the_hold_in_place_is_refused(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, trader = world
    order = _assign(db, world, "1000.00")
    bm.release_trader_hold(
        db,
        trader_id=trader.id,
        crypto_currency_id=ref.crypto.id,
        amount=order.hold_amount,
        incoming_order_id=order.incoming_order_id,
        order_id=order.id,
    )
    with pytest.raises(
        InvariantViolation, match=f"hold of order {order.public_id} is not in place"
    ):
        bm.complete_order(db, order=order)
    deposit = _fresh(db, BalanceTrader, trader_id=trader.id)
    assert (deposit.balance, deposit.frozen) == (D("1000"), D("0"))


def test_a_second_completion_of_one_order_is_refused(db: Session, world) -> None:  # type: ignore[no-untyped-def]
    order = _assign(db, world, "1000.00")
    _complete(db, order)
    with pytest.raises((InvariantViolation, Exception)), db.begin_nested():
        bm.complete_order(db, order=order)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([OrderType.PAYIN, OrderType.PAYOUT]),
            st.decimals(min_value=D("10.00"), max_value=D("2000.00"), places=2),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_sequence_of_completions_and_cancellations_keeps_balances_equal_to_history(
    db: Session,
    world,
    steps: list[tuple[OrderType, Decimal, bool]],  # type: ignore[no-untyped-def]
) -> None:
    ref, _, trader = world
    with db.begin_nested() as nested:
        for order_type, amount, complete in steps:
            order = _assign(db, world, str(amount), order_type)
            if complete:
                bm.complete_order(db, order=order)
            elif order_type == OrderType.PAYIN:
                bm.release_trader_hold(
                    db,
                    trader_id=trader.id,
                    crypto_currency_id=ref.crypto.id,
                    amount=order.hold_amount,
                    incoming_order_id=order.incoming_order_id,
                    order_id=order.id,
                )
        db.flush()
        for model, history, fk in (
            (BalanceStore, BalanceStoreHistory, "balance_store_id"),
            (BalanceTrader, BalanceTraderCryptoHistory, "balance_trader_id"),
        ):
            for row in db.scalars(select(model).execution_options(populate_existing=True)):
                total, frozen = db.execute(
                    select(
                        func.coalesce(func.sum(history.amount), 0),
                        func.coalesce(func.sum(history.frozen_delta), 0),
                    ).where(getattr(history, fk) == row.id)
                ).one()
                assert row.balance == total
                # Holds of PayOuts never completed stay frozen on the store; everything else is back.
                assert row.frozen == frozen
                assert row.balance - row.frozen >= 0
        completed_legs = db.execute(
            select(func.coalesce(func.sum(BalancePlatformHistory.amount), 0))
        ).scalar_one()
        platform = db.scalars(
            select(BalancePlatform)
            .where(BalancePlatform.crypto_currency_id == ref.crypto.id)
            .execution_options(populate_existing=True)
        ).one_or_none()
        assert (platform.balance if platform else D(0)) == completed_legs
        nested.rollback()
