"""Different actors moving the same order to the same status at the same instant, on real parallel
sessions, when the loser brought files.

Each test holds the first actor's transition open (its order row lock taken, not committed), starts
the second actor in a thread, waits until PostgreSQL shows that session waiting for the lock
(`pg_stat_activity`), then commits the first: the second always loses, deterministically. The
loser's request is a repeat (its transition already happened): it answers the current state,
moves no money, queues no callback, and keeps the files it brought (a PayOut's transfer receipt,
a dispute's evidence), with its reason on their audit rows (`document_service`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from jivapay.database.models import (
    Admin,
    AuditLog,
    BalanceStoreHistory,
    CallbackDelivery,
    OrderHistory,
    UploadedDocument,
)
from jivapay.database.utils import atomic_transaction
from jivapay.enums import ActorKind, OrderStatus, OrderType, Role
from jivapay.security import Principal
from jivapay.services import document_service, gateway_service, staff_operations
from jivapay.services import order_status_manager as osm
from jivapay.services.document_service import FileUpload
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from jivapay.utils.exceptions import ValidationFailed
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
    make_user,
)
from tests.lock_waits import wait_for_a_lock_wait
from tests.sample_files import png_bytes

D = Decimal


def _world(order_type: OrderType) -> dict[str, Any]:
    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        store = make_store(session, ref, balance=D("1000"))
        trader = make_trader(session, ref, deposit=D("1000"))
        make_requisite(session, trader, ref)
        incoming_id = make_incoming(
            session, store, ref, amount_fiat=D("5000.00"), order_type=order_type
        ).id
        user = make_user(session, Role.ADMIN)
        admin = Admin(user_id=user.id, granted_permissions=["superuser"])
        session.add(admin)
        session.flush()
        principal = Principal(user.id, Role.ADMIN, user.email, admin.id, ("superuser",))
        world = {
            "store_id": store.store.id,
            "trader": osm.Actor(ActorKind.TRADER, user_id=trader.user_id, trader_id=trader.id),
            "trader_id": trader.id,
            "ctx": staff_operations.StaffContext(principal=principal, ip_address="203.0.113.9"),
        }
    order_id = process_incoming_order(incoming_id).order_id
    assert order_id is not None, "the order was not assigned"
    with atomic_transaction() as session:
        order = session.get(OrderHistory, order_id)
        assert order is not None
        world.update(order_id=order_id, public_id=order.public_id, incoming_id=incoming_id)
    return world


def _first_then_second(
    factory: sessionmaker[Session],
    first: Callable[[Session], Any],
    second: Callable[[Session], Any],
) -> tuple[Any, Any]:
    """`first` takes the order lock and keeps it while `second` starts and waits for it; then
    `first` commits. Returns both outcomes (an exception for a refusal)."""
    holder = factory()
    won = first(holder)
    outcome: dict[str, Any] = {}

    def run() -> None:
        session = factory()
        try:
            outcome["result"] = second(session)
            session.commit()
        except Exception as exc:  # the outcome under test
            session.rollback()
            outcome["result"] = exc
        finally:
            session.close()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_for_a_lock_wait(factory, what="the second actor never waited for the order row lock")
    finally:
        holder.commit()
        holder.close()
        worker.join(60)
    return won, outcome["result"]


def _count(session: Session, model: Any, **where: Any) -> int:
    stmt = select(func.count()).select_from(model).filter_by(**where)
    return int(session.scalar(stmt) or 0)


def test_payout_staff_complete_vs_trader_confirm_keeps_the_traders_receipt(
    committed_db: sessionmaker[Session], s3_endpoint: str
) -> None:
    """Two completions of one PayOut: support completes it while the trader confirms it with the
    receipt of the transfer they sent. The trader's request loses the race and answers the
    order's state; the receipt, the proof of the payout, is on file (it was thrown away)."""
    w = _world(OrderType.PAYOUT)
    public_id = w["public_id"]

    def staff_completes(s: Session) -> Any:
        return staff_operations.complete_order(
            s, ctx=w["ctx"], public_id=public_id, reason="support completes"
        )

    def trader_confirms(s: Session) -> Any:
        return document_service.confirm_with_receipt(
            s,
            public_id=public_id,
            actor=w["trader"],
            receipt=FileUpload(png_bytes(), "receipt.png"),
        )

    won, lost = _first_then_second(committed_db, staff_completes, trader_confirms)
    assert won.changed is True
    with committed_db() as s:
        order = s.get(OrderHistory, w["order_id"])
        assert order is not None and order.status == OrderStatus.COMPLETED.value
        receipts = _count(s, UploadedDocument, order_id=w["order_id"])
        payouts = _count(s, BalanceStoreHistory, order_id=w["order_id"], operation="payout")
        assert payouts == 1, "the PayOut's money moved more than once"
        assert reconcile(s) == []
    assert lost.changed is False and lost.status == OrderStatus.COMPLETED, lost
    assert receipts == 1, f"the trader's receipt of the payout is not on file ({receipts})"


def test_merchant_dispute_vs_sweeper_escalation_keeps_the_evidence_and_reason(
    committed_db: sessionmaker[Session], s3_endpoint: str
) -> None:
    """The scheduler escalates a paid, unconfirmed PayIn into a dispute at the instant the merchant
    opens its own dispute with evidence. The merchant loses the race and answers the order's state;
    its evidence is on file with its reason on the audit row (both were thrown away)."""
    w = _world(OrderType.PAYIN)
    public_id = w["public_id"]
    with atomic_transaction() as s:
        osm.transition(s, public_id=public_id, event=osm.OrderEvent.PAYER_CONFIRM, actor=osm.PAYER)
    with atomic_transaction() as s:
        s.execute(
            update(OrderHistory)
            .where(OrderHistory.id == w["order_id"])
            .values(confirm_deadline_at=func.now() - text("interval '1 minute'"))
        )

    def sweeper_escalates(s: Session) -> Any:
        return osm.escalate_unconfirmed(s, public_id=public_id)

    def merchant_disputes(s: Session) -> Any:
        return gateway_service.dispute_by_store(
            s,
            store_id=w["store_id"],
            public_id=public_id,
            reason="the customer says they paid twice",
            evidence=[FileUpload(png_bytes(), "evidence.png")],
        )

    won, lost = _first_then_second(committed_db, sweeper_escalates, merchant_disputes)
    assert won.changed is True
    with committed_db() as s:
        order = s.get(OrderHistory, w["order_id"])
        assert order is not None and order.status == OrderStatus.DISPUTED.value
        evidence = _count(s, UploadedDocument, order_id=w["order_id"], kind="dispute_evidence")
        callbacks = _count(s, CallbackDelivery, incoming_order_id=w["incoming_id"])
        assert callbacks == 3, f"expected pending, paid, disputed callbacks, found {callbacks}"
        assert reconcile(s) == []
        uploaded = s.scalars(
            select(AuditLog).where(
                AuditLog.action == "document.uploaded", AuditLog.target_id == public_id
            )
        ).all()
    assert lost.status == OrderStatus.DISPUTED.value, lost
    assert evidence == 1, f"the merchant's evidence is not on file ({evidence})"
    assert [row.details.get("reason") for row in uploaded] == ["the customer says they paid twice"]


def test_a_repeat_keeps_new_files_once_and_an_order_keeps_a_bounded_number(
    committed_db: sessionmaker[Session], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a race: a confirmation repeated with the same receipt stores it once; one with
    another file adds it; past `MAX_DOCUMENTS_PER_ORDER` a repeat is 422 and stores nothing."""
    w = _world(OrderType.PAYOUT)
    public_id = w["public_id"]

    def confirm(data: bytes) -> Any:
        with atomic_transaction() as s:
            return document_service.confirm_with_receipt(
                s, public_id=public_id, actor=w["trader"], receipt=FileUpload(data, "r.png")
            )

    receipt = png_bytes()
    assert confirm(receipt).changed is True
    assert confirm(receipt).changed is False  # a retry: the same file
    assert confirm(png_bytes()).changed is False  # another file
    with committed_db() as s:
        assert _count(s, UploadedDocument, order_id=w["order_id"]) == 2
    monkeypatch.setattr(document_service, "MAX_DOCUMENTS_PER_ORDER", 2)
    with pytest.raises(ValidationFailed) as refused:
        confirm(png_bytes())
    assert refused.value.code == "too_many_documents"
    with committed_db() as s:
        assert _count(s, UploadedDocument, order_id=w["order_id"]) == 2
