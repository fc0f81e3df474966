"""Gateway intake, status and store actions called as services, and the idempotency-key store."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import (
    AuditLog,
    BalanceStore,
    BalanceStoreHistory,
    IdempotencyKey,
    IncomingOrder,
    MerchantStore,
    StoreCommission,
)
from jivapay.enums import IncomingOrderStatus, OrderType
from jivapay.schemas.gateway import PayInCreate, PayOutCreate
from jivapay.services import gateway_service as gs
from jivapay.services import idempotency
from jivapay.services.order_processor import process_incoming_order
from jivapay.utils.exceptions import (
    ConfigurationError,
    DuplicateObject,
    Forbidden,
    IdempotencyKeyMismatch,
    InsufficientBalance,
    InvalidStatusTransition,
    JivaPayException,
    NotFound,
    StaleExchangeRate,
    ValidationFailed,
)
from tests.factories import (
    Ref,
    StoreWorld,
    make_bank_method,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
)

D = Decimal


@pytest.fixture
def world(db: Session) -> tuple[Ref, StoreWorld]:
    ref = make_reference(db, rate=D("95.5"))
    make_bank_method(db, ref)
    store = make_store(
        db,
        ref,
        payin_percent=D("2.5"),
        payout_percent=D("3"),
        lower=D("100"),
        upper=D("50000"),
        balance=D("1000"),
    )
    return ref, store


def _payin(ref: Ref, **overrides: Any) -> PayInCreate:
    data: dict[str, Any] = {
        "merchant_order_id": f"m-{utcnow().timestamp()}",
        "amount_fiat": "1000.00",
        "fiat_currency": ref.fiat.code,
    }
    data.update(overrides)
    return PayInCreate.model_validate(data)


def _payout(ref: Ref, **overrides: Any) -> PayOutCreate:
    data: dict[str, Any] = {
        "merchant_order_id": f"p-{utcnow().timestamp()}",
        "amount_fiat": "955.00",
        "fiat_currency": ref.fiat.code,
        "payment_method": ref.method.code,
        "bank": ref.bank.code,
        "beneficiary": {"number": "4111 1111-1111 1111", "name": "Ivan Payee"},
    }
    data.update(overrides)
    return PayOutCreate.model_validate({k: v for k, v in data.items() if v is not None})


def _store_balance(db: Session, world: StoreWorld) -> BalanceStore:
    db.expire_all()
    return db.scalars(select(BalanceStore).where(BalanceStore.store_id == world.store.id)).one()


def test_payin_fixes_rate_and_commission_and_queues_at_creation_time(db: Session, world) -> None:
    ref, store = world
    now = utcnow()
    result = gs.create_payin(db, store=store.store.id, data=_payin(ref), now=now)

    incoming = db.get(IncomingOrder, result.incoming_id)
    assert incoming is not None
    # C = 1000 / 95.5 rounded down; store commission 2.5% rounded half-up.
    assert incoming.amount_crypto == D("10.47120418") == result.amount_crypto
    assert incoming.store_commission == D("0.26178010") == result.store_commission
    assert incoming.exchange_rate == D("95.5") and incoming.store_commission_rate == D("2.5")
    assert incoming.store_hold == 0 and incoming.status == "new"
    assert incoming.next_attempt_at == now == incoming.created_at
    assert result.order_id.startswith("ord_") and len(result.order_id) >= 28
    assert result.payment_url is not None and result.payment_url.endswith(f"/pay/{result.order_id}")
    audit = db.scalars(select(AuditLog).where(AuditLog.target_id == result.order_id)).one()
    assert audit.action == "order.intake"


def test_newest_store_commission_row_applies(db: Session, world) -> None:
    ref, store = world
    db.add(
        StoreCommission(
            store_id=store.store.id,
            commission_payin=D("4"),
            commission_payout=D("1"),
            created_at=utcnow() + timedelta(seconds=1),
        )
    )
    db.flush()
    result = gs.create_payin(db, store=store.store.id, data=_payin(ref))
    assert result.store_commission == D("0.41884817")  # 10.47120418 * 4% half-up


def test_missing_store_commission_is_a_configuration_error(db: Session, world) -> None:
    ref, store = world
    db.execute(delete(StoreCommission).where(StoreCommission.store_id == store.store.id))
    with pytest.raises(ConfigurationError):
        gs.create_payin(db, store=store.store.id, data=_payin(ref))


def test_payout_by_fiat_freezes_store_hold_with_history(db: Session, world) -> None:
    ref, store = world
    result = gs.create_payout(db, store=store.store.id, data=_payout(ref))
    incoming = db.get(IncomingOrder, result.incoming_id)
    assert incoming is not None
    assert (incoming.amount_crypto, incoming.store_commission) == (D("10"), D("0.3"))
    assert incoming.store_hold == D("10.3")
    assert incoming.beneficiary_number == "4111111111111111"
    assert incoming.beneficiary_last4 == "1111" and result.payment_url is None
    stored = db.scalar(
        text("SELECT beneficiary_number FROM incoming_orders WHERE id = :id"), {"id": incoming.id}
    )
    assert stored and "4111111111111111" not in stored  # encrypted at rest
    balance = _store_balance(db, store)
    assert (balance.balance, balance.frozen) == (D("1000"), D("10.3"))
    history = db.scalars(
        select(BalanceStoreHistory).where(BalanceStoreHistory.incoming_order_id == incoming.id)
    ).one()
    assert (history.operation, history.frozen_delta, history.amount) == ("freeze", D("10.3"), 0)


def test_payout_by_crypto_keeps_crypto_and_derives_fiat(db: Session, world) -> None:
    ref, store = world
    data = _payout(ref, amount_fiat=None, amount_crypto="10.5")
    result = gs.create_payout(db, store=store.store.id, data=data)
    assert result.amount_crypto == D("10.5") and result.amount_fiat == D("1002.75")
    assert _store_balance(db, store).frozen == D("10.815")  # 10.5 + 3%


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"amount_fiat": "1234.567"}, "validation_failed"),
        ({"amount_fiat": "-5"}, "validation_failed"),
        ({"amount_fiat": "0"}, "validation_failed"),
        ({"amount_fiat": "99.99"}, "amount_out_of_limits"),
        ({"amount_fiat": "50000.01"}, "amount_out_of_limits"),
        ({"fiat_currency": "ZZZ"}, "unknown_currency"),
        ({"payment_method": "no-such-method"}, "unknown_payment_method"),
        ({"bank": "no-such-bank"}, "unknown_bank"),
    ],
)
def test_payin_refusals_write_nothing(db: Session, world, overrides, code) -> None:
    ref, store = world
    before = db.scalar(select(func.count()).select_from(IncomingOrder))
    # Malformed amounts are refused by the strict request model itself (422 at the API).
    with pytest.raises((JivaPayException, PydanticValidationError)) as info:
        gs.create_payin(db, store=store.store.id, data=_payin(ref, **overrides))
    if isinstance(info.value, JivaPayException):
        assert info.value.code == code and 400 <= info.value.status_code < 500
    else:
        assert code == "validation_failed"
    assert db.scalar(select(func.count()).select_from(IncomingOrder)) == before


def test_currency_of_another_store_is_a_mismatch(db: Session, world) -> None:
    ref, store = world
    other = make_reference(db)
    with pytest.raises(ValidationFailed) as info:
        gs.create_payin(db, store=store.store.id, data=_payin(ref, fiat_currency=other.fiat.code))
    assert info.value.code == "currency_mismatch"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("access", False, "store_access_denied"),
        ("trafic_access", False, "store_traffic_disabled"),
        ("pay_in_enabled", False, "direction_disabled"),
    ],
)
def test_store_switches_refuse_with_403(db: Session, world, field, value, code) -> None:
    ref, store = world
    db.execute(
        update(MerchantStore).where(MerchantStore.id == store.store.id).values({field: value})
    )
    db.expire_all()
    with pytest.raises(Forbidden) as info:
        gs.create_payin(db, store=store.store.id, data=_payin(ref))
    assert info.value.code == code and info.value.status_code == 403


def test_required_customer_id(db: Session, world) -> None:
    ref, store = world
    store.store.gateway_require_customer_id_param = True
    db.flush()
    with pytest.raises(ValidationFailed) as info:
        gs.create_payin(db, store=store.store.id, data=_payin(ref))
    assert info.value.code == "customer_id_required"
    assert gs.create_payin(db, store=store.store.id, data=_payin(ref, customer_id="c-1")).status


def test_stale_or_missing_rate_is_503(db: Session, world) -> None:
    ref, store = world
    ref.rate.updated_at = utcnow() - timedelta(days=2)
    db.flush()
    with pytest.raises(StaleExchangeRate) as info:
        gs.create_payin(db, store=store.store.id, data=_payin(ref))
    assert info.value.status_code == 503


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"amount_crypto": "10"}, "exactly one"),
        ({"amount_fiat": None}, "exactly one"),
        ({"bank": None}, "payment_method and bank"),
        ({"beneficiary": None}, "beneficiary"),
        ({"beneficiary": {"number": "4111", "name": "X"}}, "12 to 19 digits"),
        ({"beneficiary": {"number": "4111abcd11111111", "name": "X"}}, "12 to 19 digits"),
        ({"amount_fiat": None, "amount_crypto": "0.000000001"}, "8 decimal"),
    ],
)
def test_payout_refusals(db: Session, world, overrides, message) -> None:
    ref, store = world
    with pytest.raises((ValidationFailed, PydanticValidationError)) as info:
        gs.create_payout(db, store=store.store.id, data=_payout(ref, **overrides))
    text = info.value.message if isinstance(info.value, ValidationFailed) else str(info.value)
    assert message in text or "decimal places" in text
    assert _store_balance(db, store).frozen == 0


def test_payout_by_crypto_outside_limits(db: Session, world) -> None:
    ref, store = world
    with pytest.raises(ValidationFailed) as info:
        gs.create_payout(
            db, store=store.store.id, data=_payout(ref, amount_fiat=None, amount_crypto="1")
        )
    assert info.value.code == "amount_out_of_limits"  # 1 USDT = 95.50 < 100


def test_insufficient_store_balance_rolls_back_the_order(db: Session, world) -> None:
    ref, _ = world
    poor = make_store(db, ref, balance=D("5"), lower=D("1"))
    with pytest.raises(InsufficientBalance), db.begin_nested():
        gs.create_payout(db, store=poor.store.id, data=_payout(ref))
    assert db.scalar(select(func.count()).where(IncomingOrder.store_id == poor.store.id)) == 0


def test_duplicate_merchant_order_id_is_409(db: Session, world) -> None:
    ref, store = world
    gs.create_payin(db, store=store.store.id, data=_payin(ref, merchant_order_id="same"))
    with pytest.raises(DuplicateObject) as info:
        gs.create_payin(db, store=store.store.id, data=_payin(ref, merchant_order_id="same"))
    assert info.value.code == "duplicate_merchant_order_id" and info.value.status_code == 409


def test_status_is_scoped_to_store_and_type(db: Session, world) -> None:
    ref, store = world
    other = make_store(db, ref)
    result = gs.create_payin(db, store=store.store.id, data=_payin(ref))
    view = gs.get_order_status(
        db, store_id=store.store.id, public_id=result.order_id, order_type=OrderType.PAYIN
    )
    assert view.status == "new" and view.requisite is None and view.expires_at is None
    with pytest.raises(NotFound):
        gs.get_order_status(
            db, store_id=other.store.id, public_id=result.order_id, order_type=OrderType.PAYIN
        )
    with pytest.raises(NotFound):
        gs.get_order_status(
            db, store_id=store.store.id, public_id=result.order_id, order_type=OrderType.PAYOUT
        )


def test_cancel_at_intake_fails_the_order_and_releases_the_hold(db: Session, world) -> None:
    ref, store = world
    result = gs.create_payout(db, store=store.store.id, data=_payout(ref))
    view = gs.cancel_by_store(db, store_id=store.store.id, public_id=result.order_id, reason="oops")
    assert view.status == "failed" and view.failure_reason == "canceled by store: oops"
    assert view.beneficiary is not None and view.beneficiary.number_masked == "**** 1111"
    assert _store_balance(db, store).frozen == 0
    again = gs.cancel_by_store(db, store_id=store.store.id, public_id=result.order_id)
    assert again.status == "failed"
    with pytest.raises(InvalidStatusTransition):
        gs.dispute_by_store(db, store_id=store.store.id, public_id=result.order_id)


def test_worker_failure_is_not_cancelable(db: Session, world) -> None:
    ref, store = world
    result = gs.create_payin(db, store=store.store.id, data=_payin(ref))
    incoming = db.get(IncomingOrder, result.incoming_id)
    assert incoming is not None
    incoming.status = IncomingOrderStatus.FAILED.value
    incoming.failure_reason = "requisite_not_found: trader 7 is full"
    db.flush()
    view = gs.get_order_status(
        db, store_id=store.store.id, public_id=result.order_id, order_type=None
    )
    assert view.failure_reason == "requisite_not_found"  # internal detail stays internal
    with pytest.raises(InvalidStatusTransition):
        gs.cancel_by_store(db, store_id=store.store.id, public_id=result.order_id)


def test_assigned_payin_shows_requisite_and_moves_through_actions(db: Session, world) -> None:
    ref, store = world
    trader = make_trader(db, ref)
    make_requisite(db, trader, ref, number="2200123456789012")
    result = gs.create_payin(db, store=store.store.id, data=_payin(ref))
    db.commit()
    assert process_incoming_order(result.incoming_id).outcome == "assigned"
    db.expire_all()

    view = gs.get_order_status(
        db, store_id=store.store.id, public_id=result.order_id, order_type=OrderType.PAYIN
    )
    assert view.status == "pending" and view.expires_at is not None
    assert view.requisite is not None and view.requisite.number == "2200123456789012"
    assert view.requisite.holder_name == "Ivanova Anna"
    assert view.requisite.bank.code == ref.bank.code

    assert gs.confirm_by_payer(db, public_id=result.order_id).status == "paid"
    disputed = gs.dispute_by_store(
        db, store_id=store.store.id, public_id=result.order_id, reason="no goods"
    )
    assert disputed.status == "disputed"


def test_payer_confirm_before_assignment_is_409_and_unknown_is_404(db: Session, world) -> None:
    ref, store = world
    result = gs.create_payin(db, store=store.store.id, data=_payin(ref))
    with pytest.raises(InvalidStatusTransition):
        gs.confirm_by_payer(db, public_id=result.order_id)
    with pytest.raises(NotFound):
        gs.confirm_by_payer(db, public_id="ord_nope")


def test_reference_methods_lists_available_pairs(db: Session, world) -> None:
    ref, store = world
    view = gs.list_methods(db, store_id=store.store.id)
    assert view.fiat_currency == ref.fiat.code
    assert [(m.payment_method.code, [b.code for b in m.banks]) for m in view.methods] == [
        (ref.method.code, [ref.bank.code])
    ]


# --------------------------------------------------------------------------- idempotency


def _action(calls: list[int]) -> idempotency.Action:
    def run() -> tuple[int, dict[str, Any]]:
        calls.append(1)
        return 201, {"n": len(calls)}

    return run


def test_idempotency_replays_refuses_other_body_and_expires(db: Session, world) -> None:
    _, store = world
    sid = store.store.id
    calls: list[int] = []
    first = idempotency.run_idempotent(
        db, store_id=sid, key="k1", fingerprint="a" * 64, action=_action(calls)
    )
    again = idempotency.run_idempotent(
        db, store_id=sid, key="k1", fingerprint="a" * 64, action=_action(calls)
    )
    assert (first.replayed, again.replayed, again.body, len(calls)) == (False, True, {"n": 1}, 1)
    with pytest.raises(IdempotencyKeyMismatch):
        idempotency.run_idempotent(
            db, store_id=sid, key="k1", fingerprint="b" * 64, action=_action(calls)
        )

    later = utcnow() + timedelta(hours=25)
    fresh = idempotency.run_idempotent(
        db, store_id=sid, key="k1", fingerprint="b" * 64, action=_action(calls), now=later
    )
    assert fresh.replayed is False and fresh.body == {"n": 2}
    count = db.scalar(select(func.count()).where(IdempotencyKey.store_id == sid))
    assert count == 1


def test_delete_expired_keys(db: Session, world) -> None:
    _, store = world
    now = utcnow()
    for key, age in (("old", 30), ("new", 1)):
        db.add(
            IdempotencyKey(
                store_id=store.store.id,
                key=key,
                request_fingerprint="f" * 64,
                response_status=201,
                response_body={},
                created_at=now - timedelta(hours=age),
            )
        )
    db.flush()
    assert idempotency.delete_expired_keys(db, now=now) >= 1
    keys = set(
        db.scalars(select(IdempotencyKey.key).where(IdempotencyKey.store_id == store.store.id))
    )
    assert keys == {"new"}


@pytest.mark.parametrize("key", [None, "", "   ", "x" * 256, "bad\nkey"])
def test_invalid_keys(key: str | None) -> None:
    with pytest.raises(JivaPayException) as info:
        idempotency.validate_key(key)
    assert info.value.status_code == 400
    assert info.value.code in {"idempotency_key_required", "idempotency_key_invalid"}
