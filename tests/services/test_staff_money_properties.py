"""Property: any sequence of staff money moves and order interventions keeps every ledger invariant.

Hypothesis draws sequences of deposits, withdrawals, adjustments, new orders (PayIn and PayOut),
completions, cancellations, disputes and their resolutions, and releases of orders held for review,
over a small world (one store, two traders with a requisite each). Each step runs through the staff
services in a savepoint of its own (a refused step, such as a withdrawal beyond the available
balance or an impossible transition, leaves nothing behind); after every step `reconcile` finds no
discrepancy and no available balance is negative. A refused withdrawal must be one the available
balance did not cover.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import Admin, BalanceStore, BalanceTrader, IncomingOrder, OrderHistory
from jivapay.enums import IncomingOrderStatus, OrderType, Role
from jivapay.security import Principal
from jivapay.services import staff_operations
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.services.staff_operations import StaffContext
from jivapay.utils.exceptions import InsufficientBalance, InvalidStatusTransition
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
    make_user,
)

D = Decimal

amounts = st.decimals(min_value=D("0.00000001"), max_value=D("3000"), places=8)
signed = st.decimals(min_value=D("-3000"), max_value=D("3000"), places=8).filter(lambda d: d != 0)
fiat = st.decimals(min_value=D("100"), max_value=D("40000"), places=2)
index = st.integers(min_value=0, max_value=20)

steps = st.one_of(
    st.tuples(st.just("deposit"), st.sampled_from(["trader", "store"]), amounts),
    st.tuples(st.just("withdraw"), st.sampled_from(["trader", "store"]), amounts),
    st.tuples(st.just("adjust"), st.sampled_from(["trader", "store", "platform"]), signed),
    st.tuples(st.just("order"), st.sampled_from([OrderType.PAYIN, OrderType.PAYOUT]), fiat),
    st.tuples(st.sampled_from(["complete", "cancel", "dispute"]), index),
    st.tuples(st.just("resolve"), index, st.sampled_from(["completed", "canceled"])),
    st.tuples(st.just("held"), st.sampled_from([OrderType.PAYIN, OrderType.PAYOUT]), fiat),
)


def _world(db: Session) -> dict[str, Any]:
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, balance=D("500"))
    traders = [make_trader(db, ref, deposit=D("300")) for _ in range(2)]
    for trader in traders:
        make_requisite(db, trader, ref)
    user = make_user(db, Role.ADMIN)
    admin = Admin(user_id=user.id, granted_permissions=["superuser"])
    db.add(admin)
    db.flush()
    principal = Principal(
        user_id=user.id,
        role=Role.ADMIN,
        email=user.email,
        profile_id=admin.id,
        permissions=("superuser",),
    )
    return {
        "ref": ref,
        "store": store,
        "trader": traders[0],
        "ctx": StaffContext(principal=principal, ip_address="198.51.100.7"),
        "orders": [],
    }


def _available(db: Session, kind: str, w: dict[str, Any]) -> Decimal:
    db.expire_all()
    if kind == "trader":
        row: Any = db.scalar(select(BalanceTrader).where(BalanceTrader.trader_id == w["trader"].id))
    else:
        row = db.scalar(select(BalanceStore).where(BalanceStore.store_id == w["store"].store.id))
    return D(0) if row is None else row.balance - row.frozen


def _new_order(db: Session, w: dict[str, Any], order_type: OrderType, amount: Decimal) -> None:
    incoming = make_incoming(db, w["store"], w["ref"], amount_fiat=amount, order_type=order_type)
    result = process_incoming_order(incoming.id)
    if result.order_id is not None:
        w["orders"].append(db.get(OrderHistory, result.order_id).public_id)


def _held_then_released(
    db: Session, w: dict[str, Any], order_type: OrderType, amount: Decimal
) -> None:
    incoming = make_incoming(db, w["store"], w["ref"], amount_fiat=amount, order_type=order_type)
    incoming.status = IncomingOrderStatus.MANUAL_REVIEW.value
    db.flush()
    staff_operations.release_incoming(db, ctx=w["ctx"], public_id=incoming.public_id)
    db.flush()
    result = process_incoming_order(incoming.id)
    if result.order_id is not None:
        w["orders"].append(db.get(OrderHistory, result.order_id).public_id)


def _apply(db: Session, w: dict[str, Any], step: tuple[Any, ...]) -> None:
    ctx, code = w["ctx"], w["ref"].crypto.code
    op = step[0]
    if op in ("deposit", "withdraw"):
        kind, amount = step[1], step[2]
        before = _available(db, kind, w)
        account_id = w["trader"].id if kind == "trader" else w["store"].store.id
        try:
            staff_operations.move_balance(
                db,
                ctx=ctx,
                account=kind,
                direction=op,
                account_id=account_id,
                crypto_currency=code,
                amount=amount,
                reason="property",
            )
        except InsufficientBalance:
            assert op == "withdraw" and amount > before
            raise
    elif op == "adjust":
        kind, amount = step[1], step[2]
        account_id = {"trader": w["trader"].id, "store": w["store"].store.id}.get(kind)
        staff_operations.adjust_balance(
            db,
            ctx=ctx,
            account=kind,
            account_id=account_id,
            crypto_currency=code,
            amount=amount,
            reason="property",
        )
    elif op == "order":
        _new_order(db, w, step[1], step[2])
    elif op == "held":
        _held_then_released(db, w, step[1], step[2])
    elif w["orders"]:
        public_id = w["orders"][step[1] % len(w["orders"])]
        if op == "complete":
            staff_operations.complete_order(db, ctx=ctx, public_id=public_id, reason="p")
        elif op == "cancel":
            staff_operations.cancel_order(db, ctx=ctx, public_id=public_id, reason="p")
        elif op == "dispute":
            staff_operations.open_dispute(db, ctx=ctx, public_id=public_id, reason="p", evidence=[])
        else:
            staff_operations.resolve_dispute(
                db, ctx=ctx, public_id=public_id, outcome=step[2], reason="p"
            )


def _no_negative_available(db: Session) -> None:
    db.expire_all()
    for model in (BalanceStore, BalanceTrader):
        for row in db.scalars(select(model)):
            assert row.balance - row.frozen >= 0, (model.__tablename__, row.id)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(steps, min_size=1, max_size=10))
def test_staff_moves_keep_the_ledger(db, sequence) -> None:  # type: ignore[no-untyped-def]
    example = db.begin_nested()
    try:
        w = _world(db)
        for step in sequence:
            savepoint = db.begin_nested()
            try:
                _apply(db, w, step)
                savepoint.commit()
            except (InsufficientBalance, InvalidStatusTransition):
                savepoint.rollback()
            db.expire_all()
            assert reconcile(db) == [], step
            _no_negative_available(db)
        assert db.scalar(select(IncomingOrder.id).limit(1)) is not None or not any(
            s[0] in ("order", "held") for s in sequence
        )
    finally:
        example.rollback()
