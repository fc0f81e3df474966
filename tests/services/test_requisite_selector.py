"""The requisite selector: priority, round robin and dynamic limits, the trader's deposit, and its
SQL computing the PayIn hold exactly as `money.payin_hold` does."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jivapay.database.models import BalanceTraderCryptoHistory, OrderHistory
from jivapay.enums import IncomingOrderStatus
from jivapay.money import payin_hold
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.services.requisite_selector import PAYIN_HOLD_SQL, payin_hold_for
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader
from tests.services.order_world import D

_HOLD_IN_SQL = text(
    "SELECT "
    + PAYIN_HOLD_SQL.replace(":amount_crypto", "CAST(:amount_crypto AS NUMERIC(20, 8))").replace(
        "tc.commission_payin", "CAST(:percent AS NUMERIC(7, 4))"
    )
)

amounts = st.decimals(
    min_value=Decimal("0.00000001"), max_value=Decimal("999999999.99999999"), places=8
)
percents = st.decimals(min_value=Decimal(0), max_value=Decimal("99.9999"), places=4)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amount=amounts, percent=percents)
@example(amount=Decimal("0.00000005"), percent=Decimal("10"))  # C*t/100 ends in an exact half
@example(amount=Decimal("0.00000015"), percent=Decimal("10"))
@example(amount=Decimal("999999999.99999999"), percent=Decimal("99.9999"))
def test_the_selector_sql_and_money_agree_on_the_payin_hold(
    db: Session, amount: Decimal, percent: Decimal
) -> None:
    in_sql = db.scalar(_HOLD_IN_SQL, {"amount_crypto": amount, "percent": percent})
    assert in_sql == payin_hold(amount, percent) == payin_hold_for(amount, percent)


def test_selector_honours_priority_round_robin_and_limits(db) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    store = make_store(db, ref, balance=None)
    preferred = make_trader(db, ref, priority=1)
    other = make_trader(db, ref, priority=5)
    p1 = make_requisite(db, preferred, ref, max_concurrent=1)
    p2 = make_requisite(db, preferred, ref, total_limit=D("150"), window_minutes=60)
    o1 = make_requisite(db, other, ref, day_max=D("1000"))
    chosen = []
    for _ in range(4):
        res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("100.00")).id)
        chosen.append(db.get(OrderHistory, res.order_id).requisite_id)
    # p1 (never used) first; p1 is then full (1 open order) -> p2; p2's window 150 is full -> o1.
    assert chosen == [p1.id, p2.id, o1.id, o1.id]
    deposit_history = db.scalar(
        select(func.count())
        .select_from(BalanceTraderCryptoHistory)
        .where(BalanceTraderCryptoHistory.operation == "freeze")
    )
    assert deposit_history == 4
    assert reconcile(db) == []


def test_payin_needs_trader_deposit(db) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db)
    store = make_store(db, ref)
    poor = make_trader(db, ref, deposit=D("5"))
    make_requisite(db, poor, ref)
    res = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("1000.00")).id)
    assert res.outcome == IncomingOrderStatus.RETRYING
    assert "requisite_not_found" in (res.reason or "")
