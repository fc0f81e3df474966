"""`reconcile` reports what it must: money moved for an order that did not complete, and an open
hold frozen on no balance row (the other checks are exercised by the CLI and concurrency tests)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from jivapay.database.models import OrderHistory
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
            "no money moved for an order not completed (canceled, 3 legs)",
            order.public_id,
            D(0),
            D(0),
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
