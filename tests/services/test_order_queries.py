"""Listing orders: the queries a page costs do not grow with the number of orders on it."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from jivapay.enums import Role
from jivapay.security import Principal, load_principal
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.order_queries import OrderFilters, list_orders
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader
from tests.sql_statements import recorded_statements

D = Decimal


def _statements(db: Session, principal: Principal) -> tuple[int, int]:
    db.expunge_all()  # nothing cached: every row the views need is loaded by the listing
    with recorded_statements(db.connection()) as seen:
        items, total = list_orders(
            db, principal=principal, filters=OrderFilters(), limit=50, offset=0
        )
    assert len(items) == total
    return total, len(seen)


def test_listing_costs_the_same_queries_for_one_order_or_many(db: Session) -> None:
    ref = make_reference(db, rate=D("50"))
    store = make_store(db, ref, balance=D("100000"))
    trader = make_trader(db, ref)
    for n in range(4):
        make_requisite(db, trader, ref, number=f"220012341234{n:04d}")
    principal = load_principal(db, user_id=trader.user_id, role=Role.TRADER)

    assert process_incoming_order(
        make_incoming(db, store, ref, amount_fiat=D("100.00")).id
    ).order_id
    one, queries_for_one = _statements(db, principal)
    for _ in range(4):
        result = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("100.00")).id)
        assert result.order_id is not None
    many, queries_for_many = _statements(db, principal)

    assert (one, many) == (1, 5)
    assert queries_for_many == queries_for_one, (queries_for_one, queries_for_many)
