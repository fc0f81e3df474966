"""Business counters move with what the services commit: assignment latency, status transitions,
fraud decisions. Read from this process's default registry (the API servers' `/metrics`)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from jivapay.database.models import OrderHistory
from jivapay.services import fraud_detector
from jivapay.services import order_status_manager as osm
from jivapay.services.fraud_detector import FraudDecision, FraudOutcome
from jivapay.services.order_processor import process_incoming_order
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

D = Decimal


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, payin_percent=D("5"), payout_percent=D("3"), balance=D("500"))
    trader = make_trader(db, ref, payin_percent=D("3"), payout_percent=D("1"), deposit=D("1000"))
    make_requisite(db, trader, ref)
    return ref, store, trader


def test_assignment_and_transitions_are_counted_after_commit(db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader = world
    assigned = _sample("jivapay_order_transitions_total", from_status="new", to_status="pending")
    latency = _sample("jivapay_assignment_latency_seconds_count", order_type="payin")
    paid = _sample("jivapay_order_transitions_total", from_status="pending", to_status="paid")
    completed = _sample(
        "jivapay_order_transitions_total", from_status="paid", to_status="completed"
    )

    incoming = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    result = process_incoming_order(incoming.id)
    assert result.outcome == "assigned"
    assert (
        _sample("jivapay_order_transitions_total", from_status="new", to_status="pending")
        == assigned + 1
    )
    assert _sample("jivapay_assignment_latency_seconds_count", order_type="payin") == latency + 1

    order_id = db.get(OrderHistory, result.order_id).public_id
    osm.transition(db, public_id=order_id, event=osm.OrderEvent.PAYER_CONFIRM, actor=osm.PAYER)
    # Flushed but not committed yet: nothing counted.
    assert (
        _sample("jivapay_order_transitions_total", from_status="pending", to_status="paid") == paid
    )
    db.commit()
    assert (
        _sample("jivapay_order_transitions_total", from_status="pending", to_status="paid")
        == paid + 1
    )

    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=order_id,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
    )
    db.rollback()  # a rolled-back transition is never counted
    assert (
        _sample("jivapay_order_transitions_total", from_status="paid", to_status="completed")
        == completed
    )


def test_fraud_decisions_are_counted_by_rule_after_commit(db) -> None:  # type: ignore[no-untyped-def]
    labels = {"rule": "amount_max", "outcome": "review", "stage": "intake"}
    before = _sample("jivapay_fraud_decisions_total", **labels)
    decision = FraudDecision(FraudOutcome.REVIEW, "amount_max", {})
    fraud_detector.record_decision(db, public_id="ord_metrics", decision=decision)
    fraud_detector.record_decision(
        db, public_id="ord_metrics", decision=FraudDecision(FraudOutcome.ALLOW)
    )
    assert _sample("jivapay_fraud_decisions_total", **labels) == before
    db.commit()
    assert _sample("jivapay_fraud_decisions_total", **labels) == before + 1
