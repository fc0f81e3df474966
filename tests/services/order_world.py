"""What the order-engine tests share: a small world and a fresh read of a balance row.

The `world` fixture itself is in this directory's conftest.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.factories import make_reference, make_requisite, make_store, make_trader

D = Decimal


def balance_row(db: Session, model: Any, **key: Any) -> Any:
    """The balance row as committed by the engine's own sessions (the identity map is expired)."""
    db.expire_all()
    return db.scalars(select(model).filter_by(**key)).one()


def build_world(db: Session) -> tuple[Any, Any, Any, Any]:
    """Reference data at rate 100, a store (5%/3%, balance 500), a trader (3%/1%, deposit 1000)
    and one requisite."""
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, payin_percent=D("5"), payout_percent=D("3"), balance=D("500"))
    trader = make_trader(db, ref, payin_percent=D("3"), payout_percent=D("1"), deposit=D("1000"))
    req = make_requisite(db, trader, ref)
    return ref, store, trader, req
