"""Fraud checks on the real PostgreSQL and Redis: each rule firing (and not), switches, velocity
counted once per order and across processes, the database fallback when Redis is down, the order
processor's DENY/REVIEW handling, manual review release/reject, the confirmation check, lists."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from jivapay.database.base import utcnow
from jivapay.database.models import AuditLog, BalanceStore, IncomingOrder, OrderHistory
from jivapay.enums import FraudListKind, FraudListType, OrderType, Role
from jivapay.services import fraud_detector, fraud_lists, gateway_service, manual_review
from jivapay.services import order_status_manager as osm
from jivapay.services.fraud_detector import FraudOutcome, check_incoming_order, window_of
from jivapay.services.order_processor import process_incoming_order
from jivapay.utils.config_loader import set_config_value
from jivapay.utils.exceptions import (
    DuplicateObject,
    InvalidStatusTransition,
    PermissionDenied,
    ValidationFailed,
)
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
    make_user,
)

D = Decimal
DEAD_REDIS = "redis://127.0.0.1:1/0"
WINDOW = 3600


@pytest.fixture(autouse=True)
def _private_counters(redis_client: Any, unique: str) -> Iterator[str]:
    """Counters of this test only; deleted afterwards (other runs share the Redis)."""
    prefix = f"jivapay-test-fraud-{unique}"
    fraud_detector.KEY_PREFIX_OVERRIDE = prefix
    yield prefix
    fraud_detector.KEY_PREFIX_OVERRIDE = None
    fraud_detector.REDIS_URL_OVERRIDE = None
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def ref(db: Session):
    return make_reference(db, rate=D("100"))


@pytest.fixture
def store(db: Session, ref):
    # Orders are dated inside the current fraud window (up to an hour back): a payment time
    # longer than the window keeps them assignable (a PayIn past it fails at intake).
    return make_store(db, ref, balance=D("1000"), order_ttl_minutes=2 * WINDOW // 60)


@pytest.fixture
def assignable(db: Session, ref, store):
    """A trader with a requisite, so orders that pass the checks get assigned."""
    trader = make_trader(db, ref, deposit=D("10000"))
    make_requisite(db, trader, ref)
    return trader


def _settings(db: Session, **values: object) -> None:
    for key, value in values.items():
        set_config_value(db, key, value)


def _window_time(offset_seconds: int) -> Any:
    return window_of(utcnow(), WINDOW)[1] + timedelta(seconds=5 + offset_seconds)


def _order(
    db: Session,
    store,
    ref,
    *,
    amount: str = "1000.00",
    customer_id: str | None = None,
    ip: str | None = None,
    offset: int = 0,
    order_type: OrderType = OrderType.PAYIN,
) -> IncomingOrder:
    incoming = make_incoming(
        db,
        store,
        ref,
        amount_fiat=D(amount),
        order_type=order_type,
        created_at=_window_time(offset),
    )
    incoming.customer_id = customer_id
    incoming.customer_ip = ip
    db.flush()
    return incoming


def _audit(db: Session, public_id: str, action: str) -> list[AuditLog]:
    return list(
        db.scalars(
            select(AuditLog).where(AuditLog.target_id == public_id, AuditLog.action == action)
        )
    )


def _admin(db: Session, permissions: tuple[str, ...] = ("incoming_orders:review:all",)):
    user = make_user(db, Role.ADMIN)
    return osm.Actor(osm.ActorKind.ADMIN, user_id=user.id, permissions=permissions)


# --------------------------------------------------------------------------- amount


def test_amount_thresholds_review_and_deny_and_switches(db: Session, store, ref) -> None:
    _settings(db, FRAUD_MANUAL_REVIEW_THRESHOLD="5000", FRAUD_DENY_THRESHOLD="10000")
    small, mid, big = (_order(db, store, ref, amount=a) for a in ("5000.00", "5000.01", "10000.01"))

    assert check_incoming_order(db, order=small).outcome == FraudOutcome.ALLOW
    review = check_incoming_order(db, order=mid)
    assert (review.outcome, review.rule) == (FraudOutcome.REVIEW, "amount_review")
    deny = check_incoming_order(db, order=big)
    assert (deny.outcome, deny.rule) == (FraudOutcome.DENY, "amount_deny")
    fired = {f["rule"] for f in cast(list[dict[str, Any]], deny.details["fired"])}
    assert fired == {"amount_deny", "amount_review"}

    _settings(db, FRAUD_RULE_AMOUNT_ENABLED=False)
    assert check_incoming_order(db, order=big).outcome == FraudOutcome.ALLOW
    _settings(db, FRAUD_RULE_AMOUNT_ENABLED=True, FRAUD_DENY_THRESHOLD="")  # unset disables
    assert check_incoming_order(db, order=big).rule == "amount_review"
    _settings(db, FRAUD_CHECKS_ENABLED=False)
    assert check_incoming_order(db, order=big).outcome == FraudOutcome.ALLOW


# --------------------------------------------------------------------------- block lists


def test_blocklisted_customer_ip_and_cards_are_denied(db: Session, store, ref, unique) -> None:
    other = make_store(db, ref)
    add = fraud_lists.add_entry
    add(
        db,
        kind="customer_id",
        value=f"bad-{unique}",
        list_type="block",
        reason="t",
        actor_user_id=None,
    )
    add(
        db,
        kind="customer_id",
        value=f"{store.store.id}:scoped-{unique}",
        list_type="block",
        reason="one store only",
        actor_user_id=None,
    )
    add(db, kind="ip", value="198.51.100.0/24", list_type="block", reason="net", actor_user_id=None)

    assert check_incoming_order(
        db, order=_order(db, store, ref, customer_id=f"bad-{unique}")
    ).rule == ("blocklist_customer_id")
    scoped = check_incoming_order(db, order=_order(db, store, ref, customer_id=f"scoped-{unique}"))
    assert scoped.rule == "blocklist_customer_id"
    elsewhere = _order(db, other, ref, customer_id=f"scoped-{unique}")
    assert check_incoming_order(db, order=elsewhere).outcome == FraudOutcome.ALLOW
    in_net = check_incoming_order(db, order=_order(db, store, ref, ip="198.51.100.77"))
    assert (in_net.outcome, in_net.rule) == (FraudOutcome.DENY, "blocklist_ip")
    assert check_incoming_order(db, order=_order(db, store, ref, ip="198.51.101.1")).outcome == (
        FraudOutcome.ALLOW
    )

    # PayOut cards: make_incoming's beneficiary is 4111111111111111.
    payout = _order(db, store, ref, order_type=OrderType.PAYOUT)
    assert check_incoming_order(db, order=payout).outcome == FraudOutcome.ALLOW
    entry = add(
        db,
        kind="card_hash",
        value="4111 1111 1111 1111",
        list_type="block",
        reason="c",
        actor_user_id=None,
    )
    assert entry.value == fraud_lists.card_hash_of("4111111111111111") and "4111" not in entry.value
    assert check_incoming_order(db, order=payout).rule == "blocklist_card_hash"
    fraud_lists.remove_entry(db, entry_id=entry.id, actor_user_id=None)
    add(db, kind="card_last4", value="1111", list_type="block", reason="c", actor_user_id=None)
    assert check_incoming_order(db, order=payout).rule == "blocklist_card_last4"

    _settings(db, FRAUD_RULE_BLOCKLIST_ENABLED=False)
    assert check_incoming_order(db, order=payout).outcome == FraudOutcome.ALLOW


def test_allow_list_does_not_beat_block_list(db: Session, store, ref, unique) -> None:
    for list_type in ("allow", "block"):
        fraud_lists.add_entry(
            db, kind="ip", value="203.0.113.9", list_type=list_type, reason=None, actor_user_id=None
        )
    assert check_incoming_order(db, order=_order(db, store, ref, ip="203.0.113.9")).rule == (
        "blocklist_ip"
    )


def test_fraud_list_service_validates_and_audits(db: Session, unique) -> None:
    admin = make_user(db, Role.ADMIN)
    entry = fraud_lists.add_entry(
        db,
        kind=FraudListKind.IP,
        value=" 2001:db8::1 ",
        list_type=FraudListType.BLOCK,
        reason="abuse",
        actor_user_id=admin.id,
    )
    assert entry.value == "2001:db8::1"
    with pytest.raises(DuplicateObject):
        fraud_lists.add_entry(
            db, kind="ip", value="2001:db8::1", list_type="block", reason=None, actor_user_id=None
        )
    with pytest.raises(ValidationFailed):
        fraud_lists.add_entry(
            db, kind="ip", value="not-an-ip", list_type="block", reason=None, actor_user_id=None
        )
    with pytest.raises(ValidationFailed):
        fraud_lists.add_entry(
            db, kind="card_last4", value="12a4", list_type="block", reason=None, actor_user_id=None
        )
    listed = fraud_lists.list_entries(db, kind="ip", value="2001:db8::1")
    assert [e.id for e in listed] == [entry.id]
    fraud_lists.remove_entry(db, entry_id=entry.id, actor_user_id=admin.id, reason="appeal")
    assert fraud_lists.list_entries(db, kind="ip", value="2001:db8::1") == []
    actions = db.scalars(
        select(AuditLog.action).where(
            AuditLog.target_entity == "fraud_list", AuditLog.target_id == str(entry.id)
        )
    ).all()
    assert sorted(actions) == ["fraud_list.add", "fraud_list.remove"]


# --------------------------------------------------------------------------- velocity


def test_velocity_per_customer_counts_each_order_once(db: Session, store, ref, unique) -> None:
    _settings(db, FRAUD_VELOCITY_MAX_PER_CUSTOMER=2, FRAUD_VELOCITY_WINDOW_SECONDS=WINDOW)
    orders = [_order(db, store, ref, customer_id=f"c-{unique}", offset=i) for i in range(3)]
    decisions = [check_incoming_order(db, order=o) for o in orders]
    assert [d.outcome for d in decisions] == ["allow", "allow", "deny"]
    assert decisions[2].rule == "velocity_customer"
    assert decisions[2].details["velocity_counts"] == {"customer": 3, "store": 3}

    # Retries of the same orders are not counted again and decide the same.
    for _ in range(3):
        assert check_incoming_order(db, order=orders[0]).outcome == FraudOutcome.ALLOW
        assert check_incoming_order(db, order=orders[2]).rule == "velocity_customer"
    fourth = check_incoming_order(
        db, order=_order(db, store, ref, customer_id=f"c-{unique}", offset=9)
    )
    assert fourth.details["velocity_counts"] == {"customer": 4, "store": 4}

    # Another customer of the same store is below its own limit.
    assert check_incoming_order(
        db, order=_order(db, store, ref, customer_id=f"d-{unique}")
    ).outcome == (FraudOutcome.ALLOW)
    _settings(db, FRAUD_RULE_VELOCITY_ENABLED=False)
    assert check_incoming_order(db, order=orders[2]).outcome == FraudOutcome.ALLOW


def test_velocity_per_ip_and_per_store_and_allow_list(db: Session, store, ref, unique) -> None:
    _settings(db, FRAUD_VELOCITY_MAX_PER_IP=1, FRAUD_VELOCITY_MAX_PER_STORE=3)
    other = make_store(db, ref)
    ip = "192.0.2.44"
    assert (
        check_incoming_order(db, order=_order(db, store, ref, ip=ip)).outcome == FraudOutcome.ALLOW
    )
    second = check_incoming_order(db, order=_order(db, other, ref, ip=ip, offset=1))
    assert (second.outcome, second.rule) == (FraudOutcome.DENY, "velocity_ip")

    # An allow-listed IP is not counted nor limited.
    fraud_lists.add_entry(
        db, kind="ip", value="192.0.2.45", list_type="allow", reason=None, actor_user_id=None
    )
    for i in range(2):
        allowed = check_incoming_order(
            db, order=_order(db, other, ref, ip="192.0.2.45", offset=2 + i)
        )
        assert allowed.outcome == FraudOutcome.ALLOW and "ip" not in cast(
            dict[str, int], allowed.details["velocity_counts"]
        )

    # `store` has 1 order so far; the 4th is over the store limit of 3.
    outcomes = [
        check_incoming_order(db, order=_order(db, store, ref, offset=10 + i)) for i in range(3)
    ]
    assert [d.outcome for d in outcomes] == ["allow", "allow", "deny"]
    assert outcomes[2].rule == "velocity_store"


def test_redis_down_falls_back_to_database_with_the_same_decisions(
    db: Session, store, ref, unique
) -> None:
    _settings(db, FRAUD_VELOCITY_MAX_PER_CUSTOMER=2, FRAUD_VELOCITY_MAX_PER_IP=3)
    other = make_store(db, ref)

    def run(world, customer: str, ip: str) -> list[tuple[str, str | None, object]]:
        out = []
        for i in range(4):
            d = check_incoming_order(
                db, order=_order(db, world, ref, customer_id=customer, ip=ip, offset=i)
            )
            out.append((d.outcome.value, d.rule, d.details["velocity_counts"]))
        return out

    with capture_logs() as up_logs:
        with_redis = run(store, f"a-{unique}", "192.0.2.10")
    fraud_detector.REDIS_URL_OVERRIDE = DEAD_REDIS
    with capture_logs() as logs:
        without = run(other, f"b-{unique}", "192.0.2.11")
    assert with_redis == without
    assert [o for o, _, _ in without] == ["allow", "allow", "deny", "deny"]
    assert without[2][1] == "velocity_customer"
    assert not any(e["event"] == "fraud_velocity_redis_unavailable" for e in up_logs)
    assert sum(e["event"] == "fraud_velocity_redis_unavailable" for e in logs) == 4


def test_velocity_counters_are_shared_across_processes(
    redis_url: str, _private_counters: str
) -> None:
    counters = {"store": f"{_private_counters}:v:store:proc:{WINDOW}:1"}
    batches = [[f"p{n}-{i}" for i in range(60)] for n in range(2)]
    ctx = multiprocessing.get_context("spawn")
    from tests.services.fraud_velocity_child import count_orders

    with ctx.Pool(2) as pool:
        results = pool.starmap(
            count_orders, [(redis_url, _private_counters, batch, counters) for batch in batches]
        )
        # Both processes again with the same orders: counted once, counts unchanged.
        again = pool.starmap(
            count_orders, [(redis_url, _private_counters, batch, counters) for batch in batches]
        )
    assert again == results
    seen = sorted(results[0] + results[1])
    assert seen == list(range(1, 121))  # every order got its own count: no lost increment
    from jivapay.utils.redis_client import get_redis

    assert int(str(get_redis(redis_url).get(counters["store"]))) == 120
    assert 0 < get_redis(redis_url).ttl(counters["store"]) <= 600


# --------------------------------------------------------------------------- card harvesting


def test_unpaid_expired_payins_send_the_customer_to_review(
    db: Session, store, ref, assignable, unique
) -> None:
    _settings(db, FRAUD_UNPAID_EXPIRED_MAX=2)
    customer = f"h-{unique}"

    def expire_one(offset: int) -> None:
        incoming = _order(db, store, ref, customer_id=customer, offset=offset)
        order = db.get_one(OrderHistory, process_incoming_order(incoming.id).order_id)
        osm.expire_order(db, public_id=order.public_id, now=order.expires_at + timedelta(seconds=1))

    expire_one(0)
    below = check_incoming_order(db, order=_order(db, store, ref, customer_id=customer, offset=5))
    assert below.outcome == FraudOutcome.ALLOW
    expire_one(1)
    probe = _order(db, store, ref, customer_id=customer, offset=6)
    held = check_incoming_order(db, order=probe)
    assert (held.outcome, held.rule) == (FraudOutcome.REVIEW, "unpaid_expired")
    # A PayOut does not reveal a requisite: the rule does not apply.
    payout = _order(db, store, ref, customer_id=customer, offset=7, order_type=OrderType.PAYOUT)
    assert check_incoming_order(db, order=payout).outcome == FraudOutcome.ALLOW

    _settings(db, FRAUD_RULE_UNPAID_EXPIRED_ENABLED=False)
    assert check_incoming_order(db, order=probe).outcome == FraudOutcome.ALLOW
    _settings(db, FRAUD_RULE_UNPAID_EXPIRED_ENABLED=True)
    fraud_lists.add_entry(
        db, kind="customer_id", value=customer, list_type="allow", reason="vip", actor_user_id=None
    )
    assert check_incoming_order(db, order=probe).outcome == FraudOutcome.ALLOW


def test_unpaid_expired_counts_only_this_stores_customer_inside_the_window(
    db: Session, store, ref, assignable, unique
) -> None:
    """The count is read with the list lookup in one statement: another customer's, another
    store's and an older expired PayIn of the same customer id do not count, nor the customer's
    open PayIn or expired PayOut."""
    # Off while the expired orders are made: from the third on the rule would hold them.
    _settings(db, FRAUD_UNPAID_EXPIRED_MAX=3, FRAUD_RULE_UNPAID_EXPIRED_ENABLED=False)
    customer = f"c-{unique}"
    other_store = make_store(db, ref)
    expired: list[OrderHistory] = []
    for offset in range(5):
        incoming = _order(db, store, ref, customer_id=customer, offset=offset)
        order = db.get_one(OrderHistory, process_incoming_order(incoming.id).order_id)
        osm.expire_order(db, public_id=order.public_id, now=order.expires_at + timedelta(seconds=1))
        expired.append(order)
    # Not unpaid expired PayIns either: the customer's open PayIn and expired PayOut.
    still_open = _order(db, store, ref, customer_id=customer, offset=6)
    assert process_incoming_order(still_open.id).outcome == "assigned"
    payout = _order(db, store, ref, customer_id=customer, offset=7, order_type=OrderType.PAYOUT)
    order = db.get_one(OrderHistory, process_incoming_order(payout.id).order_id)
    osm.expire_order(db, public_id=order.public_id, now=order.expires_at + timedelta(seconds=1))
    expired[2].customer_id = f"someone-else-{unique}"
    expired[3].store_id = other_store.store.id
    expired[4].created_at = utcnow() - timedelta(hours=31)
    db.flush()
    _settings(db, FRAUD_RULE_UNPAID_EXPIRED_ENABLED=True, FRAUD_UNPAID_EXPIRED_WINDOW_HOURS=30)
    probe = _order(db, store, ref, customer_id=customer, offset=10)
    assert check_incoming_order(db, order=probe).outcome == FraudOutcome.ALLOW  # 2 of 3
    expired[4].created_at = utcnow() - timedelta(hours=29)
    db.flush()
    held = check_incoming_order(db, order=probe)
    fired = held.details["fired"][0]
    assert held.rule == "unpaid_expired"
    assert (fired["count"], fired["max"], fired["window_hours"]) == (3, 3, 30)


# --------------------------------------------------------------------------- order processor


def test_deny_fails_the_order_with_the_rule_and_audits(
    db: Session, store, ref, assignable, unique
) -> None:
    fraud_lists.add_entry(
        db,
        kind="customer_id",
        value=f"x-{unique}",
        list_type="block",
        reason=None,
        actor_user_id=None,
    )
    incoming = _order(db, store, ref, customer_id=f"x-{unique}", order_type=OrderType.PAYOUT)
    assert db.scalars(select(BalanceStore).filter_by(store_id=store.store.id)).one().frozen > 0

    result = process_incoming_order(incoming.id)
    db.expire_all()
    assert result.outcome == "failed"
    row = db.get_one(IncomingOrder, incoming.id)
    assert row.status == "failed" and "blocklist_customer_id" in (row.failure_reason or "")
    assert db.scalars(select(BalanceStore).filter_by(store_id=store.store.id)).one().frozen == 0
    audit = _audit(db, incoming.public_id, "fraud.deny")
    assert len(audit) == 1 and audit[0].details["rule"] == "blocklist_customer_id"
    assert audit[0].level == "warning"


def test_review_parks_the_order_and_release_lets_it_be_assigned(
    db: Session, store, ref, assignable
) -> None:
    _settings(db, FRAUD_MANUAL_REVIEW_THRESHOLD="500")
    incoming = _order(db, store, ref, amount="1000.00")
    with capture_logs() as logs:
        result = process_incoming_order(incoming.id)
    assert result.outcome == "manual_review"
    db.expire_all()
    row = db.get_one(IncomingOrder, incoming.id)
    assert row.status == "manual_review" and "amount_review" in (row.failure_reason or "")
    audit = _audit(db, incoming.public_id, "fraud.review")
    assert len(audit) == 1 and audit[0].details["rule"] == "amount_review"
    alerts = [e for e in logs if e["event"] == "alert"]
    assert (
        alerts and alerts[0]["rule"] == "amount_review" and alerts[0]["order"] == incoming.public_id
    )

    # Still held while in review: processing again changes nothing.
    assert process_incoming_order(incoming.id).outcome == "skipped"
    with pytest.raises(PermissionDenied):
        manual_review.release_for_processing(
            db, incoming_order_id=incoming.id, actor=_admin(db, permissions=())
        )
    released = manual_review.release_for_processing(
        db, incoming_order_id=incoming.id, actor=_admin(db)
    )
    assert released.status == "new"
    # Announced to the workers on commit: tests/worker/test_intake_feed.py.
    assert _audit(db, incoming.public_id, "fraud.review_released")
    db.commit()  # the release commits (a savepoint here), as a request would

    assigned = process_incoming_order(incoming.id)
    assert assigned.outcome == "assigned" and assigned.order_id is not None
    with pytest.raises(InvalidStatusTransition):
        manual_review.reject(db, incoming_order_id=incoming.id, actor=_admin(db), reason="late")


def test_reject_fails_a_held_payout_and_releases_the_store_hold(
    db: Session, store, ref, assignable
) -> None:
    _settings(db, FRAUD_MANUAL_REVIEW_THRESHOLD="500")
    incoming = _order(db, store, ref, amount="2000.00", order_type=OrderType.PAYOUT)
    assert process_incoming_order(incoming.id).outcome == "manual_review"
    db.expire_all()
    assert db.scalars(select(BalanceStore).filter_by(store_id=store.store.id)).one().frozen == D(
        "20.6"
    )
    result = manual_review.reject(
        db, incoming_order_id=incoming.id, actor=_admin(db), reason="stolen card"
    )
    assert result.status == "failed"
    db.expire_all()
    row = db.get_one(IncomingOrder, incoming.id)
    assert row.failure_reason == "rejected after fraud review: stolen card"
    assert db.scalars(select(BalanceStore).filter_by(store_id=store.store.id)).one().frozen == 0
    assert _audit(db, incoming.public_id, "fraud.review_rejected")
    with pytest.raises(InvalidStatusTransition):
        manual_review.release_for_processing(db, incoming_order_id=incoming.id, actor=_admin(db))


# --------------------------------------------------------------------------- confirmation


def test_blocked_payer_confirmation_opens_a_dispute(db: Session, store, ref, assignable) -> None:
    ok = _order(db, store, ref, ip="192.0.2.200")
    bad = _order(db, store, ref, ip="192.0.2.201", offset=1)
    ok_id = db.get_one(OrderHistory, process_incoming_order(ok.id).order_id).public_id
    bad_id = db.get_one(OrderHistory, process_incoming_order(bad.id).order_id).public_id
    fraud_lists.add_entry(
        db, kind="ip", value="192.0.2.201", list_type="block", reason=None, actor_user_id=None
    )
    assert gateway_service.confirm_by_payer(db, public_id=ok_id).status == "paid"
    held = gateway_service.confirm_by_payer(db, public_id=bad_id)
    assert held.status == "disputed"
    audit = _audit(db, bad_id, "fraud.deny")
    assert len(audit) == 1 and audit[0].details["stage"] == "confirmation"
    assert audit[0].details["rule"] == "blocklist_ip"


def test_payer_confirmation_past_the_deadline_is_refused_before_the_fraud_check(
    db: Session, store, ref, assignable
) -> None:
    bad = _order(db, store, ref, ip="192.0.2.202")
    order = db.get_one(OrderHistory, process_incoming_order(bad.id).order_id)
    fraud_lists.add_entry(
        db, kind="ip", value="192.0.2.202", list_type="block", reason=None, actor_user_id=None
    )
    order.expires_at = utcnow() - timedelta(minutes=1)  # the sweeper has not expired it yet
    db.flush()
    with pytest.raises(InvalidStatusTransition, match="time to pay"):
        gateway_service.confirm_by_payer(db, public_id=order.public_id)
    db.refresh(order)
    # Neither paid nor turned into a dispute, and no fraud decision recorded for it.
    assert order.status == "pending" and not _audit(db, order.public_id, "fraud.deny")
