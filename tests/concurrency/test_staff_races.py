"""Staff operations racing each other on real parallel sessions (threads, one connection each):
two agents resolving the same dispute in opposite ways, and two withdrawals that together exceed
the available deposit. Exactly one of each wins; the loser gets a conflict or a refusal, never a
second money move; `reconcile` is clean afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jivapay.database.models import Admin, AuditLog, BalanceTrader, OrderHistory
from jivapay.database.utils import atomic_transaction
from jivapay.enums import Role
from jivapay.security import Principal
from jivapay.services import order_status_manager as osm
from jivapay.services import staff_operations
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.services.staff_operations import StaffContext
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
    make_user,
)
from tests.lock_waits import wait_for_a_lock_wait

D = Decimal


def _ctx(session: Session) -> StaffContext:
    user = make_user(session, Role.ADMIN)
    admin = Admin(user_id=user.id, granted_permissions=["superuser"])
    session.add(admin)
    session.flush()
    principal = Principal(user.id, Role.ADMIN, user.email, admin.id, ("superuser",))
    return StaffContext(principal=principal, ip_address="203.0.113.9")


def _race(factory: sessionmaker[Session], jobs: list[Callable[[Session], Any]]) -> list[Any]:
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        session = factory()
        try:
            barrier.wait()
            results[i] = jobs[i](session)
            session.commit()
        except Exception as exc:  # the outcome under test
            session.rollback()
            results[i] = exc
        finally:
            session.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_opposite_resolutions_of_one_dispute(committed_db) -> None:  # type: ignore[no-untyped-def]
    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        store = make_store(session, ref, balance=D("100"))
        trader = make_trader(session, ref, deposit=D("1000"))
        make_requisite(session, trader, ref)
        incoming_id = make_incoming(session, store, ref, amount_fiat=D("5000.00")).id
        ctx = _ctx(session)
    order_id = process_incoming_order(incoming_id).order_id
    with atomic_transaction() as session:
        public_id = session.get(OrderHistory, order_id).public_id
        staff_operations.open_dispute(
            session, ctx=ctx, public_id=public_id, reason="race", evidence=[]
        )

    def resolve(outcome: str) -> Callable[[Session], Any]:
        return lambda s: staff_operations.resolve_dispute(
            s, ctx=ctx, public_id=public_id, outcome=outcome, reason="race"
        )

    results = _race(committed_db, [resolve("completed"), resolve("canceled")])
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1 and winners[0].changed is True
    assert len(losers) == 1 and getattr(losers[0], "code", None) == "invalid_status_transition"
    with committed_db() as session:
        assert session.get(OrderHistory, order_id).status == winners[0].status.value
        assert reconcile(session) == []


def test_parallel_withdrawals_never_overdraw(committed_db) -> None:  # type: ignore[no-untyped-def]
    with atomic_transaction() as session:
        ref = make_reference(session)
        trader = make_trader(session, ref, deposit=D("100"))
        ctx = _ctx(session)
        trader_id, code = trader.id, ref.crypto.code

    def withdraw(s: Session) -> Any:
        return staff_operations.move_balance(
            s,
            ctx=ctx,
            account="trader",
            direction="withdraw",
            account_id=trader_id,
            crypto_currency=code,
            amount=D("60"),
            reason="race",
        )

    results = _race(committed_db, [withdraw, withdraw, withdraw])
    done = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(done) == 1 and done[0].balance == D("40")
    assert [getattr(r, "code", None) for r in refused] == ["insufficient_balance"] * 2
    with committed_db() as session:
        row = session.scalars(select(BalanceTrader).filter_by(trader_id=trader_id)).one()
        assert row.balance == D("40")
        assert reconcile(session) == []


def test_staff_audit_records_the_status_the_order_had_under_the_lock(committed_db) -> None:  # type: ignore[no-untyped-def]
    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        store = make_store(session, ref)
        trader = make_trader(session, ref, deposit=D("1000"))
        make_requisite(session, trader, ref)
        incoming_id = make_incoming(session, store, ref, amount_fiat=D("500.00")).id
        ctx = _ctx(session)
    order_id = process_incoming_order(incoming_id).order_id
    with committed_db() as s:
        public_id = s.get(OrderHistory, order_id).public_id
    # The payer's confirmation holds the order row while support completes the order.
    payer = committed_db()
    osm.transition(payer, public_id=public_id, event=osm.OrderEvent.PAYER_CONFIRM, actor=osm.PAYER)
    outcome: dict[str, Any] = {}

    def complete() -> None:
        with committed_db() as session:
            outcome["result"] = staff_operations.complete_order(
                session, ctx=ctx, public_id=public_id, reason="support completes"
            )
            session.commit()

    worker = threading.Thread(target=complete)
    worker.start()
    wait_for_a_lock_wait(committed_db)
    payer.commit()
    payer.close()
    worker.join(60)

    assert outcome["result"].changed is True
    with committed_db() as s:
        row = s.scalars(
            select(AuditLog).where(
                AuditLog.target_id == public_id, AuditLog.action == "staff.order_complete"
            )
        ).one()
        assert (row.details["old"], row.details["new"]) == (
            {"status": "paid"},
            {"status": "completed"},
        )
        assert reconcile(s) == []
