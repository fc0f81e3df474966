"""`reconcile` reports what it must: money (crypto or fiat) moved for an order that did not complete,
a completed order's legs that differ from the order (its amounts, its accounts), and an open hold
frozen on no balance row (the other checks are exercised by the CLI and concurrency tests).

Each broken state keeps every balance equal to its history and every order's crypto legs summing to
zero, so only the check under test can see it."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from jivapay.database.models import BalanceTraderFiat, OrderHistory, Trader
from jivapay.enums import OrderStatus
from jivapay.services import order_status_manager as osm
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

D = Decimal


def _assigned_payin(db: Session):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, balance=D("100"))
    trader = make_trader(db, ref, deposit=D("1000"))
    make_requisite(db, trader, ref)
    result = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("5000.00")).id)
    order = db.get(OrderHistory, result.order_id)
    assert order is not None and reconcile(db) == []
    return ref, trader, order


def test_money_moved_for_an_order_that_did_not_complete_is_reported(db: Session) -> None:
    _ref, trader, order = _assigned_payin(db)
    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=order.public_id,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
    )
    assert order.status == OrderStatus.COMPLETED
    assert reconcile(db) == []  # completed: three legs summing to zero
    # The same money moves, on an order that ended canceled (a lost status change, a double move).
    db.execute(text("UPDATE order_history SET status = 'canceled' WHERE id = :i"), {"i": order.id})
    found = reconcile(db)
    assert [(d.check, d.subject, d.expected, d.actual) for d in found] == [
        (
            "no money moved for an order not completed (canceled, 3 crypto + 1 fiat legs)",
            order.public_id,
            D(0),
            D(0),
        )
    ]


def _complete(db: Session, trader: Trader, order: OrderHistory) -> None:
    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=order.public_id,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
    )
    assert order.status == OrderStatus.COMPLETED
    assert reconcile(db) == []


def _shift_leg(db: Session, order: OrderHistory, ledger: str, operation: str, by: D) -> None:
    """Add `by` to an order's leg in `ledger` and to that account's balance, which still equals
    its history. `ledger`: "store" (balance_stores) or "platform" (balance_platform)."""
    history, accounts, account_id = {
        "store": ("balance_store_history", "balance_stores", "balance_store_id"),
        "platform": ("balance_platform_history", "balance_platform", "balance_platform_id"),
    }[ledger]
    leg = {"i": order.incoming_order_id, "op": operation, "by": by}
    db.execute(
        text(
            f"UPDATE {history} SET amount = amount + :by"
            " WHERE incoming_order_id = :i AND operation = :op"
        ),
        leg,
    )
    db.execute(
        text(
            f"UPDATE {accounts} SET balance = balance + :by WHERE id = (SELECT {account_id}"
            f" FROM {history} WHERE incoming_order_id = :i AND operation = :op)"
        ),
        leg,
    )


def test_fiat_moved_for_an_order_that_did_not_complete_is_reported(db: Session) -> None:
    ref, trader, order = _assigned_payin(db)
    osm.cancel_order(db, public_id=order.public_id, actor=osm.PAYER)
    assert order.status == OrderStatus.CANCELED
    assert reconcile(db) == []
    # A fiat "payin" for the canceled order, with its balance: the fiat balance equals its history.
    fiat = BalanceTraderFiat(trader_id=trader.id, fiat_currency_id=ref.fiat.id, balance=D(0))
    db.add(fiat)
    db.flush()
    db.execute(
        text(
            "INSERT INTO balance_trader_fiat_history (balance_trader_fiat_id, operation, amount,"
            " balance_after, incoming_order_id, order_id) VALUES (:f, 'payin', :a, :a, :i, :o)"
        ),
        {"f": fiat.id, "a": order.amount_fiat, "i": order.incoming_order_id, "o": order.id},
    )
    db.execute(
        text("UPDATE balance_traders_fiat SET balance = :a WHERE id = :f"),
        {"a": order.amount_fiat, "f": fiat.id},
    )
    found = reconcile(db)
    assert [(d.check, d.subject, d.expected, d.actual) for d in found] == [
        (
            "no money moved for an order not completed (canceled, 0 crypto + 1 fiat legs)",
            order.public_id,
            D(0),
            D(0),
        )
    ]


def test_completed_legs_that_differ_from_the_orders_commissions_are_reported(db: Session) -> None:
    _ref, trader, order = _assigned_payin(db)
    _complete(db, trader, order)
    # The store's leg gets the whole store commission back and the platform's leg loses it: the
    # legs still sum to zero, but the store was paid C instead of C - C*s.
    shift = order.store_commission
    _shift_leg(db, order, "store", "payin", shift)
    _shift_leg(db, order, "platform", "commission", -shift)
    found = reconcile(db)
    assert [(d.check, d.subject, d.expected, d.actual) for d in found] == [
        (
            "store leg of a completed order = the order",
            order.public_id,
            order.amount_crypto - order.store_commission,
            order.amount_crypto,
        )
    ]


def test_a_completed_orders_leg_on_another_account_is_reported(db: Session) -> None:
    ref, trader, order = _assigned_payin(db)
    _complete(db, trader, order)
    # The fiat the order's trader received is booked on another trader's fiat balance.
    other = make_trader(db, ref)
    fiat = BalanceTraderFiat(trader_id=other.id, fiat_currency_id=ref.fiat.id, balance=D(0))
    db.add(fiat)
    db.flush()
    moved = {"a": order.amount_fiat, "t": trader.id, "f": fiat.id, "i": order.incoming_order_id}
    for sql in (
        "UPDATE balance_traders_fiat SET balance = balance - :a WHERE trader_id = :t",
        "UPDATE balance_traders_fiat SET balance = :a WHERE id = :f",
        "UPDATE balance_trader_fiat_history SET balance_trader_fiat_id = :f"
        " WHERE incoming_order_id = :i",
    ):
        db.execute(text(sql), moved)
    found = reconcile(db)
    assert [(d.check, d.subject, d.expected, d.actual) for d in found] == [
        (
            "trader fiat leg of a completed order = the order (1 more on another account or"
            " operation)",
            order.public_id,
            order.amount_fiat,
            None,
        )
    ]


def test_an_open_hold_on_an_account_without_a_balance_row_is_reported(db: Session) -> None:
    ref, trader, order = _assigned_payin(db)
    other = make_trader(db, ref, deposit=None)  # no balance_traders row at all
    # The open PayIn now names a trader whose deposit holds nothing for it, and the first
    # trader's hold is gone with its history, so every other check passes.
    db.execute(
        text("UPDATE order_history SET trader_id = :t WHERE id = :i"),
        {"t": other.id, "i": order.id},
    )
    db.execute(text("UPDATE balance_traders SET frozen = 0 WHERE trader_id = :t"), {"t": trader.id})
    db.execute(
        text(
            "UPDATE balance_trader_crypto_history SET frozen_delta = 0"
            " WHERE incoming_order_id = :i AND operation = 'freeze'"
        ),
        {"i": order.incoming_order_id},
    )
    found = reconcile(db)
    assert [(d.check, d.subject, d.expected, d.actual) for d in found] == [
        (
            "trader frozen = open PayIn holds",
            f"trader {other.id} (no balance row)",
            order.hold_amount,
            D(0),
        )
    ]
