"""Business counters move with what the services commit: assignment latency, status transitions,
fraud decisions. Read from this process's default registry (the API servers' `/metrics`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from jivapay.database.models import BalancePlatform, BalanceTrader, OrderHistory
from jivapay.enums import OrderType
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


def test_held_money_gauge_follows_holds_and_their_release(db, world) -> None:  # type: ignore[no-untyped-def]
    from jivapay.worker.metrics import build_registry

    ref, store, trader = world
    code = ref.crypto.code

    def held(account: str) -> float | None:
        # A fresh scrape each time: the gauge is read from PostgreSQL when Prometheus asks.
        labels = {"currency": code, "account": account}
        return build_registry().get_sample_value("jivapay_held_money", labels)

    assert (held("store"), held("trader")) == (0.0, 0.0)

    # A PayOut's intake freezes C + C*s on the store (1000 / 100 = 10, plus 3 %).
    payout = make_incoming(db, store, ref, amount_fiat=D("1000.00"), order_type=OrderType.PAYOUT)
    assert payout.store_hold == D("10.30")
    assert (held("store"), held("trader")) == (10.3, 0.0)

    # A PayIn's assignment freezes C - C*t on the trader (10 minus 3 %).
    payin = make_incoming(db, store, ref, amount_fiat=D("1000.00"))
    result = process_incoming_order(payin.id)
    assert result.outcome == "assigned"
    assert (held("store"), held("trader")) == (10.3, 9.7)

    # Completing the PayIn turns the hold into moves: nothing stays frozen for it.
    order_id = db.get(OrderHistory, result.order_id).public_id
    osm.transition(db, public_id=order_id, event=osm.OrderEvent.PAYER_CONFIRM, actor=osm.PAYER)
    osm.transition(
        db,
        public_id=order_id,
        event=osm.OrderEvent.CONFIRM,
        actor=osm.Actor(osm.ActorKind.TRADER, trader_id=trader.id),
    )
    db.flush()
    assert (held("store"), held("trader")) == (10.3, 0.0)
    # ... and the platform's profit gauge shows its share of the completed order.
    platform = db.query(BalancePlatform).filter_by(crypto_currency_id=ref.crypto.id).one()
    assert platform.balance > 0
    profit = build_registry().get_sample_value("jivapay_platform_balance", {"currency": code})
    assert profit == float(platform.balance)


def test_state_gauges_show_stale_rates_and_orders_waiting_in_new(db) -> None:  # type: ignore[no-untyped-def]
    from jivapay.worker.metrics import build_registry

    def gauge(name: str, **labels: str) -> float:
        value = build_registry().get_sample_value(name, labels)
        assert value is not None, name
        return value

    waiting = gauge("jivapay_intake_orders_waiting", status="new")
    ref = make_reference(db, rate=D("100"), rate_at=datetime.now(UTC) - timedelta(hours=7))
    # Past the 6 h of JivaPayExchangeRatesStale (the database clock is the transaction start).
    assert gauge("jivapay_exchange_rate_oldest_age_seconds") > 6 * 3600
    store = make_store(db, ref)
    make_incoming(db, store, ref, created_at=datetime.now(UTC) - timedelta(minutes=10))
    assert gauge("jivapay_intake_orders_waiting", status="new") == waiting + 1
    # Older than the 5 min of JivaPayOrdersStuckInNew.
    assert gauge("jivapay_intake_oldest_waiting_age_seconds", status="new") > 300
    assert gauge("jivapay_state_up", source="database") == 1


def test_reconciliation_gauge_counts_the_discrepancies_of_the_last_run(db) -> None:  # type: ignore[no-untyped-def]
    from jivapay.worker.tasks import reconcile_balances

    runs = _sample("jivapay_reconciliation_runs_total")
    ref = make_reference(db)
    trader = make_trader(db, ref, deposit=D("100"))
    assert reconcile_balances() == 0
    assert _sample("jivapay_reconciliation_discrepancies") == 0
    balance = db.query(BalanceTrader).filter_by(trader_id=trader.id).one()
    balance.balance = D("150")  # money appearing without history
    db.flush()
    found = reconcile_balances()
    assert found >= 1
    assert _sample("jivapay_reconciliation_discrepancies") == found
    assert _sample("jivapay_reconciliation_runs_total") == runs + 2


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    from tests.callback_receiver import Receiver

    r = Receiver().start()
    yield r
    r.stop()


def test_callback_attempts_are_counted_by_result_by_the_delivery_task(db, receiver) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from jivapay.database.models import CallbackDelivery
    from jivapay.utils.config_loader import set_config_value
    from jivapay.worker.callback_tasks import deliver_callback_task
    from tests.callback_receiver import make_world, new_delivery

    results = ("delivered", "pending", "failed", "disabled")
    before = {r: _sample("jivapay_callback_attempts_total", result=r) for r in results}

    def moved() -> dict[str, float]:
        return {
            r: _sample("jivapay_callback_attempts_total", result=r) - before[r] for r in results
        }

    world = make_world(db, receiver.url)
    ok = new_delivery(db, world)
    deliver_callback_task.apply(args=[ok.id])
    assert moved() == {"delivered": 1, "pending": 0, "failed": 0, "disabled": 0}
    deliver_callback_task.apply(args=[ok.id])  # a duplicate message: no attempt, not counted
    assert moved()["delivered"] == 1 and len(receiver.requests) == 1

    receiver.default = (500, {}, b"down")
    set_config_value(db, "CALLBACK_MAX_ATTEMPTS", 2)
    flaky = new_delivery(db, world, "canceled")
    deliver_callback_task.apply(args=[flaky.id])
    assert moved() == {"delivered": 1, "pending": 1, "failed": 0, "disabled": 0}
    # The retry is due in seconds; make it due now instead of waiting.
    db.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.id == flaky.id)
        .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    deliver_callback_task.apply(args=[flaky.id])
    assert moved() == {"delivered": 1, "pending": 1, "failed": 1, "disabled": 0}

    receiver.script = [(410, {}, b"gone")]
    gone = new_delivery(db, world, "expired")
    deliver_callback_task.apply(args=[gone.id])
    assert moved() == {"delivered": 1, "pending": 1, "failed": 1, "disabled": 1}
    assert len(receiver.requests) == 4


def test_queue_depth_counts_waiting_messages_and_state_up_drops_without_redis(
    services, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import redis

    from jivapay.config import get_settings
    from jivapay.worker.app import celery_app
    from jivapay.worker.metrics import build_registry
    from jivapay.worker.tasks import ping

    queue = f"jivapay-test-{unique}"
    monkeypatch.setattr(get_settings(), "CELERY_TASK_QUEUE", queue)
    # The app may have been configured (imported) before this test's services: scrape its broker.
    monkeypatch.setattr(get_settings(), "CELERY_BROKER_URL", celery_app.conf.broker_url)

    def depth() -> float | None:
        return build_registry().get_sample_value("celery_queue_length", {"queue": queue})

    client = redis.Redis.from_url(get_settings().celery_broker_url or "")
    try:
        assert depth() == 0
        for _ in range(3):
            ping.apply_async(queue=queue)  # no worker consumes this queue
        assert depth() == 3
    finally:
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()

    # A scrape that cannot reach Redis says so instead of failing.
    monkeypatch.setattr(get_settings(), "CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    registry = build_registry()
    assert registry.get_sample_value("jivapay_state_up", {"source": "redis"}) == 0
    assert registry.get_sample_value("celery_queue_length", {"queue": queue}) is None
