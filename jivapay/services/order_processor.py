"""Assignment of intake orders to requisites: the one orchestrator that owns two transactions.

`process_incoming_order(incoming_order_id)`:

1. Main transaction: claim the intake row (`FOR UPDATE SKIP LOCKED`; a row another worker holds is
   left to it), run the fraud check, select and lock a requisite, freeze the PayIn hold on the
   trader's deposit, create the `order_history` row (`pending`, with its deadline), bump the
   requisite's counters, mark the intake `assigned`, write the callback and audit rows, commit.
2. If anything in it fails, it rolls back and a separate failure transaction records the attempt:
   `retrying` with `next_attempt_at = now + delay * factor^(attempt - 1)`, or `failed` once
   `MAX_ORDER_RETRIES` attempts are spent (a PayOut's store hold is then released). Fraud DENY fails
   at once; REVIEW parks the order in `manual_review`. Unexpected errors are reported. A main
   transaction that found every suitable requisite only busy (`RequisiteBusy`) is first run again,
   up to `BUSY_ATTEMPTS` times, each waiting briefly for the requisite and deposit it wants instead
   of passing over them (`find_suitable_requisite(wait_for_locks=True)`), before the attempt
   counts.

`process_incoming_batch(ids)` does the same for several orders in one main transaction, claimed
together in one statement, so the claim, the session and the commit are paid once per batch. An
attempt is planned (reads and row locks: due time, fraud check, requisite, amounts) before it
writes anything, so an order its plan refuses is left out of the batch without a savepoint and
recorded in its own failure transaction as above (one that found only busy requisites is processed
again on its own); anything else fails the whole batch, whose orders are then processed one by one.

Everything here is idempotent: an order that is no longer `new`/`retrying`, or whose retry is not
due yet, is left alone, so a duplicated or late task message changes nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import ClassVar, cast

import structlog
from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import Executable

from jivapay.database.base import utcnow
from jivapay.database.models import CallbackDelivery, IncomingOrder, MerchantStore, OrderHistory
from jivapay.database.utils import (
    atomic_transaction,
    call_after_commit,
    generic_plans_column,
    transaction_flow,
)
from jivapay.enums import AuditLevel, IncomingOrderStatus, OrderStatus, OrderType
from jivapay.money import calculate_commissions, payin_trader_hold
from jivapay.services import balance_manager, fraud_detector, requisite_counters
from jivapay.services.fraud_detector import FraudOutcome
from jivapay.services.order_events import (
    delivery_insert,
    status_change,
    status_change_written,
    write_status_change,
)
from jivapay.services.requisite_selector import SelectedRequisite, find_suitable_requisite
from jivapay.utils.config_loader import (
    RuntimeSettings,
    runtime_settings,
    standalone_runtime_settings,
)
from jivapay.utils.exceptions import (
    InvariantViolation,
    JivaPayException,
    LimitExceeded,
    RequisiteBusy,
    RequisiteNotFound,
)
from jivapay.utils.metrics import ASSIGNMENT_LATENCY_SECONDS
from jivapay.utils.notifications import report_critical_error

log = structlog.get_logger(__name__)

_OPEN_INTAKE = (IncomingOrderStatus.NEW.value, IncomingOrderStatus.RETRYING.value)


class FraudStop(Exception):
    """Internal: the fraud checks stopped this attempt. Never reaches a client.

    Raised out of the attempt's transaction so that it rolls back; the decision travels to the
    failure transaction, which audits it and parks or fails the order.
    """

    code: ClassVar[str] = "fraud_stop"

    def __init__(self, message: str, decision: fraud_detector.FraudDecision) -> None:
        super().__init__(message)
        self.decision = decision


class FraudRejected(FraudStop):
    """The fraud checks denied the order: it fails."""

    code = "fraud_denied"


class FraudReview(FraudStop):
    """The fraud checks held the order for a person to decide (manual review)."""

    code = "fraud_review"


class IntakeExpired(Exception):
    """Internal: a PayIn not assigned within its payment time. Its payer was told how long they
    had; a requisite handed out later would be paid by no one, so the order fails instead."""

    code: ClassVar[str] = "expired_before_assignment"


@dataclass(frozen=True)
class ProcessResult:
    """What one processing attempt did (`outcome` is the intake status after it, or `skipped`)."""

    incoming_order_id: int
    outcome: str
    order_id: int | None = None
    reason: str | None = None
    next_attempt_at: datetime | None = None


def retry_delay(attempt: int, settings: RuntimeSettings | None = None) -> timedelta:
    """Delay before the next attempt after `attempt` failed ones (1-based), from the settings."""
    settings = settings or standalone_runtime_settings()
    base = Decimal(settings.RETRY_DELAY_SECONDS)
    factor = Decimal(settings.RETRY_BACKOFF_FACTOR)
    seconds = min(base * factor ** max(attempt - 1, 0), Decimal(86400))
    return timedelta(milliseconds=int(seconds * 1000))


# The order's callback rows so far, read with the claim: its status changes are serialised by the
# intake row lock the claim takes, so the count still holds when the assignment writes the next one.
_CALLBACKS_SO_FAR = (
    select(func.count())
    .select_from(CallbackDelivery)
    .where(CallbackDelivery.incoming_order_id == IncomingOrder.id)
    .scalar_subquery()
)


@dataclass(frozen=True)
class _Claimed:
    incoming: IncomingOrder
    # Held here because the session's identity map keeps unchanged objects only weakly: while this
    # reference lives, every `session.get` of the store in the attempt is answered without SQL.
    store: MerchantStore | None
    callbacks: int


# Built once (the ids are bound parameters): a claim only binds them. It also switches the rest
# of the transaction to generic plans (`generic_plans_column`) without a round trip of its own.
_CLAIM_BASE = (
    select(IncomingOrder, MerchantStore, _CALLBACKS_SO_FAR, generic_plans_column())
    .outerjoin(MerchantStore, MerchantStore.id == IncomingOrder.store_id)
    .where(IncomingOrder.status.in_(_OPEN_INTAKE))
    .with_for_update(of=IncomingOrder, skip_locked=True)
    # The store's keys are not read here: loading them decrypts both on every claim.
    .options(defer(MerchantStore.private_api_key), defer(MerchantStore.callback_secret))
)
_CLAIM = _CLAIM_BASE.where(IncomingOrder.id == bindparam("incoming_order_id"))
# In id order, so in intake order.
_CLAIM_BATCH = _CLAIM_BASE.where(
    IncomingOrder.id.in_(bindparam("incoming_order_ids", expanding=True))
).order_by(IncomingOrder.id)


def _claim(session: Session, incoming_order_id: int) -> _Claimed | None:
    """Lock the open intake row; its store and its callback count come in the same round trip."""
    row = session.execute(_CLAIM, {"incoming_order_id": incoming_order_id}).first()
    return None if row is None else _Claimed(row[0], row[1], int(row[2]))


def _claim_batch(session: Session, incoming_order_ids: Sequence[int]) -> list[_Claimed]:
    """`_claim` for several rows in one round trip (a row another worker holds is left to it)."""
    rows = session.execute(_CLAIM_BATCH, {"incoming_order_ids": list(incoming_order_ids)})
    return [_Claimed(row[0], row[1], int(row[2])) for row in rows]


_ORDERS = cast(Table, OrderHistory.__table__)
_INTAKE = cast(Table, IncomingOrder.__table__)
_ORDER_COLUMNS = (
    "public_id",
    "incoming_order_id",
    "store_id",
    "merchant_id",
    "trader_id",
    "requisite_id",
    "payment_method_id",
    "bank_id",
    "fiat_currency_id",
    "crypto_currency_id",
    "order_type",
    "amount_fiat",
    "amount_crypto",
    "exchange_rate",
    "store_commission_rate",
    "trader_commission_rate",
    "store_commission",
    "trader_commission",
    "platform_profit",
    "hold_amount",
    "turnover_bucket",
    "turnover_day",
    "status",
    "customer_id",
    "customer_ip",
    "expires_at",
    "created_at",
    "updated_at",
)
# Parameter names: an UPDATE's compiler adds every execution parameter named like one of its
# table's columns to its SET clause, so neither row's values are named like a column.
_ORDER_PREFIX = "order_"
_INTAKE_PREFIX = "intake_"
_ASSIGNED_COLUMNS = ("status", "failure_reason", "last_attempt_at", "next_attempt_at", "updated_at")


def _assignment_statement(*, trader_hold: bool) -> Executable:
    """Everything an assignment writes, in one round trip: the order row, the intake row's move to
    `assigned`, the requisite's counters (`requisite_counters`), the status change's callback and
    audit rows (`order_events`) and, for a PayIn, the trader's hold with its history row
    (`balance_manager`), each a data-modifying CTE of one SELECT that returns the new order's id,
    the delivery's id, the counter rows touched and the held account (none when the deposit did
    not cover the hold). Each module owns its SQL; this only puts the pieces together. Built once
    on the tables: an execution only binds the values (`order_*`, `intake_*`, `counter_*`,
    `delivery_*`, `audit_*`, `freeze_*`; no parameter is named like a column, which an INSERT or
    UPDATE here would take into its column list). The callback and hold history rows take the
    order's id from the order row's CTE; PostgreSQL checks their foreign keys at the end of the
    statement, when that row exists."""
    intake_assigned = (
        update(_INTAKE)
        .where(_INTAKE.c.id == bindparam("intake_id"))
        .values({c: bindparam(_INTAKE_PREFIX + c) for c in _ASSIGNED_COLUMNS})
        .cte("intake_assigned")
    )
    order_row = (
        insert(_ORDERS)
        .values({column: bindparam(_ORDER_PREFIX + column) for column in _ORDER_COLUMNS})
        .returning(_ORDERS.c.id)
        .cte("order_row")
    )
    order_id = select(order_row.c.id).scalar_subquery()
    counter_ctes, counted = requisite_counters.assigned_counter_ctes()
    delivery = delivery_insert(order_id=order_id).cte("delivery")
    columns = [
        order_id.label("order_id"),
        select(delivery.c.id).scalar_subquery().label("delivery_id"),
        counted,
    ]
    if trader_hold:
        hold = balance_manager.trader_hold_cte(order_id)
        columns.append(select(hold.c.account_id).scalar_subquery().label("held_account"))
    return select(*columns).add_cte(intake_assigned, *counter_ctes)


# Per order type, built on first use: a PayIn holds the trader's deposit at assignment, a PayOut's
# hold was taken at intake. Not built at import: the test suite forgets it before each test, as it
# does the hold's own statement, so that mutation testing runs the mutated pieces.
_WRITE_ASSIGNMENT: dict[OrderType, Executable] = {}


def _write_statement(order_type: OrderType) -> Executable:
    statement = _WRITE_ASSIGNMENT.get(order_type)
    if statement is None:
        statement = _assignment_statement(trader_hold=order_type == OrderType.PAYIN)
        _WRITE_ASSIGNMENT[order_type] = statement
    return statement


def _payment_minutes(session: Session, incoming: IncomingOrder) -> int:
    """A PayIn's payment time: its store's `order_ttl_minutes`, else the platform's."""
    store = session.get(MerchantStore, incoming.store_id)
    minutes = store.order_ttl_minutes if store else None
    return int(minutes or runtime_settings(session).PAYIN_PAYMENT_TIMEOUT_MINUTES)


def _order_deadline(session: Session, incoming: IncomingOrder, now: datetime) -> datetime:
    if incoming.order_type == OrderType.PAYIN:
        minutes = _payment_minutes(session, incoming)
    else:
        minutes = runtime_settings(session).PAYOUT_TIMEOUT_MINUTES
    return now + timedelta(minutes=minutes)


@dataclass(frozen=True)
class _Plan:
    """What an assignment will write, decided by reads and row locks alone (`plan_assignment`)."""

    chosen: SelectedRequisite
    hold: Decimal
    values: dict[str, object]


def plan_assignment(
    session: Session, *, incoming: IncomingOrder, now: datetime, wait_for_locks: bool = False
) -> _Plan:
    """Select and lock a requisite for `incoming` and work out its order row; writes nothing.

    Every refusal (no requisite, only busy ones, a missing commission, a broken invariant) is
    raised from here, before anything is written: a batch can go on after it (`process_incoming_batch`).
    `wait_for_locks`: see `find_suitable_requisite` (for a transaction holding no requisite).
    """
    chosen: SelectedRequisite = find_suitable_requisite(
        session, order=incoming, now=now, wait_for_locks=wait_for_locks
    )
    commissions = calculate_commissions(
        incoming.amount_crypto, incoming.store_commission_rate, chosen.trader_commission_percent
    )
    if commissions.store_commission != incoming.store_commission:
        raise InvariantViolation("store commission fixed at intake does not match its rate")
    if incoming.order_type == OrderType.PAYIN:
        hold = payin_trader_hold(incoming.amount_crypto, commissions)
    else:
        hold = incoming.store_hold
    store = session.get(MerchantStore, incoming.store_id)
    assert store is not None
    values = dict(
        public_id=incoming.public_id,
        incoming_order_id=incoming.id,
        store_id=incoming.store_id,
        merchant_id=store.merchant_id,
        trader_id=chosen.trader_id,
        requisite_id=chosen.requisite_id,
        payment_method_id=chosen.payment_method_id,
        bank_id=chosen.bank_id,
        fiat_currency_id=incoming.fiat_currency_id,
        crypto_currency_id=incoming.crypto_currency_id,
        order_type=incoming.order_type,
        amount_fiat=incoming.amount_fiat,
        amount_crypto=incoming.amount_crypto,
        exchange_rate=incoming.exchange_rate,
        store_commission_rate=incoming.store_commission_rate,
        trader_commission_rate=chosen.trader_commission_percent,
        store_commission=commissions.store_commission,
        trader_commission=commissions.trader_commission,
        platform_profit=commissions.platform_profit,
        hold_amount=hold,
        turnover_bucket=chosen.turnover_bucket,
        turnover_day=chosen.turnover_day,
        status=OrderStatus.PENDING.value,
        customer_id=incoming.customer_id,
        customer_ip=incoming.customer_ip,
        expires_at=_order_deadline(session, incoming, now),
        created_at=now,
        updated_at=now,
    )
    return _Plan(chosen=chosen, hold=hold, values=values)


def write_assignment(
    session: Session,
    *,
    incoming: IncomingOrder,
    plan: _Plan,
    now: datetime,
    callbacks: int | None = None,
) -> OrderHistory:
    """Write what `plan_assignment` decided: the order row with the intake's status, the counters,
    the callback and audit rows and a PayIn's hold, in one statement (`_assignment_statement`;
    flushes, no commit)."""
    chosen, hold, values = plan.chosen, plan.hold, plan.values
    previous = incoming.status
    assigned = {
        "status": IncomingOrderStatus.ASSIGNED.value,
        "failure_reason": None,
        "last_attempt_at": now,
        "next_attempt_at": None,
        "updated_at": utcnow(),
    }
    # Not added to the session (the statement writes the row): what the status change and
    # callers read; its id comes back from the statement.
    order = OrderHistory(**values)
    change = status_change(
        session,
        incoming=incoming,
        order=order,
        status=OrderStatus.PENDING.value,
        previous=previous,
        sequence=None if callbacks is None else callbacks + 1,
    )
    payin = incoming.order_type == OrderType.PAYIN
    hold_values = (
        balance_manager.trader_hold_parameters(
            trader_id=chosen.trader_id,
            crypto_currency_id=incoming.crypto_currency_id,
            amount=hold,
            incoming_order_id=incoming.id,
        )
        if payin
        else {}
    )
    written = session.execute(
        _write_statement(OrderType(incoming.order_type)),
        {
            **{_ORDER_PREFIX + k: v for k, v in values.items()},
            **{_INTAKE_PREFIX + k: v for k, v in assigned.items()},
            "intake_id": incoming.id,
            **requisite_counters.assigned_counter_parameters(
                requisite_id=chosen.requisite_id,
                amount_fiat=incoming.amount_fiat,
                bucket=chosen.turnover_bucket,
                day=chosen.turnover_day,
                now=now,
            ),
            **change.parameters,
            **hold_values,
        },
    ).one()
    if payin:
        balance_manager.trader_hold_taken(
            session,
            trader_id=chosen.trader_id,
            crypto_currency_id=incoming.crypto_currency_id,
            amount=hold,
            account_id=written.held_account,
        )
    requisite_counters.check_counted(chosen.requisite_id, written.counted)
    order.id = written.order_id
    # Written by that statement: the loaded intake object takes the values as committed ones, so
    # that no flush writes them a second time.
    for attribute, value in assigned.items():
        set_committed_value(incoming, attribute, value)
    status_change_written(session, change, written.delivery_id)
    session.flush()
    waited = max((now - incoming.created_at).total_seconds(), 0.0)
    latency = ASSIGNMENT_LATENCY_SECONDS.labels(str(incoming.order_type))
    call_after_commit(session, lambda: latency.observe(waited), label="assignment_latency_metric")
    return order


def _main_attempt(
    session: Session, incoming_order_id: int, now: datetime, *, wait_for_locks: bool = False
) -> ProcessResult:
    claimed = _claim(session, incoming_order_id)
    if claimed is None:
        return _not_claimed(incoming_order_id)
    planned = _plan_attempt(session, claimed.incoming, now, wait_for_locks=wait_for_locks)
    if isinstance(planned, ProcessResult):
        return planned
    return _write_attempt(session, claimed.incoming, planned, now, callbacks=claimed.callbacks)


def _not_claimed(incoming_order_id: int) -> ProcessResult:
    return ProcessResult(incoming_order_id, "skipped", reason="not open or held elsewhere")


def _plan_attempt(
    session: Session, incoming: IncomingOrder, now: datetime, *, wait_for_locks: bool = False
) -> _Plan | ProcessResult:
    """The attempt's reads and locks: its due time, the fraud check, the plan; writes nothing.
    A `ProcessResult` when there is nothing to do yet; raises when the order cannot be assigned."""
    if (
        incoming.status == IncomingOrderStatus.RETRYING
        and incoming.next_attempt_at is not None
        and incoming.next_attempt_at > now
    ):
        return ProcessResult(incoming.id, "skipped", reason="retry not due")
    if incoming.order_type == OrderType.PAYIN and now >= incoming.created_at + timedelta(
        minutes=_payment_minutes(session, incoming)
    ):
        raise IntakeExpired("not assigned within the payment time")
    decision = fraud_detector.check_incoming_order(session, order=incoming, now=now)
    if decision.outcome != FraudOutcome.ALLOW:
        if decision.outcome == FraudOutcome.DENY:
            raise FraudRejected(f"denied by fraud rule {decision.rule}", decision)
        raise FraudReview(f"held by fraud rule {decision.rule}", decision)
    return plan_assignment(session, incoming=incoming, now=now, wait_for_locks=wait_for_locks)


def _write_attempt(
    session: Session, incoming: IncomingOrder, plan: _Plan, now: datetime, *, callbacks: int | None
) -> ProcessResult:
    order = write_assignment(session, incoming=incoming, plan=plan, now=now, callbacks=callbacks)
    return ProcessResult(incoming.id, IncomingOrderStatus.ASSIGNED.value, order_id=order.id)


def record_failure(
    session: Session, *, incoming_order_id: int, error: BaseException, now: datetime
) -> ProcessResult:
    """The failure transaction's work: count the attempt and park, retry or fail the order."""
    incoming = session.scalars(
        select(IncomingOrder).where(IncomingOrder.id == incoming_order_id).with_for_update()
    ).first()
    if incoming is None or incoming.status not in _OPEN_INTAKE:
        return ProcessResult(incoming_order_id, "skipped", reason="closed meanwhile")
    reason = f"{getattr(error, 'code', type(error).__name__)}: {error}"[:1000]
    previous = incoming.status
    if isinstance(error, FraudStop):
        fraud_detector.record_decision(
            session, public_id=incoming.public_id, decision=error.decision
        )
    incoming.retry_count += 1
    incoming.last_attempt_at = now
    incoming.failure_reason = reason
    if isinstance(error, FraudReview):
        incoming.status = IncomingOrderStatus.MANUAL_REVIEW.value
        incoming.next_attempt_at = None
    elif isinstance(error, FraudRejected | IntakeExpired) or incoming.retry_count >= int(
        runtime_settings(session).MAX_ORDER_RETRIES
    ):
        fail_incoming(session, incoming=incoming, reason=reason, now=now, previous=previous)
        return ProcessResult(incoming_order_id, IncomingOrderStatus.FAILED.value, reason=reason)
    else:
        incoming.status = IncomingOrderStatus.RETRYING.value
        incoming.next_attempt_at = now + retry_delay(
            incoming.retry_count, runtime_settings(session)
        )
    if incoming.status == IncomingOrderStatus.MANUAL_REVIEW:
        write_status_change(
            session,
            status_change(
                session,
                incoming=incoming,
                order=None,
                status=incoming.status,
                previous=previous,
                reason=reason,
                level=AuditLevel.WARNING,
            ),
        )
    session.flush()
    return ProcessResult(
        incoming_order_id, incoming.status, reason=reason, next_attempt_at=incoming.next_attempt_at
    )


def fail_incoming(
    session: Session,
    *,
    incoming: IncomingOrder,
    reason: str,
    now: datetime,
    previous: str,
    ip_address: str | None = None,
) -> None:
    """Close an intake order as `failed`: release a PayOut's store hold, notify (flushes).
    `ip_address`: the client's when an HTTP request closes it (a store's cancel, a reviewer's
    reject), for the audit row."""
    incoming.status = IncomingOrderStatus.FAILED.value
    incoming.failure_reason = reason
    incoming.next_attempt_at = None
    if incoming.store_hold > 0:
        balance_manager.release_store_hold(
            session,
            store_id=incoming.store_id,
            crypto_currency_id=incoming.crypto_currency_id,
            amount=incoming.store_hold,
            incoming_order_id=incoming.id,
            order_id=None,
        )
    write_status_change(
        session,
        status_change(
            session,
            incoming=incoming,
            order=None,
            status=IncomingOrderStatus.FAILED.value,
            previous=previous,
            reason=reason,
            level=AuditLevel.WARNING,
            ip_address=ip_address,
        ),
    )


_EXPECTED = (RequisiteNotFound, LimitExceeded, FraudRejected, FraudReview, IntakeExpired)


def _log_failed_attempt(incoming_order_id: int, exc: Exception) -> None:
    """Log a failed attempt; an unexpected one is reported as a critical error too."""
    if not isinstance(exc, _EXPECTED):
        log.error(
            "order_processing_error",
            incoming_order_id=incoming_order_id,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        report_critical_error(
            exc, "order assignment failed unexpectedly", incoming_order_id=incoming_order_id
        )
    else:
        log.info("order_not_assigned", incoming_order_id=incoming_order_id, reason=str(exc))


# Main transactions tried when every suitable requisite is only busy (`RequisiteBusy`: other workers
# hold the requisites or their traders' deposit rows for the few milliseconds of their own
# assignments, or their batches') before the attempt counts: the retry budget is for lack of
# capacity, not for lock timing. The tries after the first wait for the best requisite and its
# deposit (at most `requisite_selector.LOCK_WAIT`), since a worker assigning batches can keep every
# requisite of a few traders busy between short pauses.
BUSY_ATTEMPTS = 3
BUSY_PAUSE_SECONDS = 0.005


@transaction_flow
def process_incoming_order(incoming_order_id: int, *, now: datetime | None = None) -> ProcessResult:
    """Try to assign one intake order; on failure record the attempt in its own transaction."""
    now = now or utcnow()
    error: Exception
    for attempt in range(1, BUSY_ATTEMPTS + 1):
        try:
            with atomic_transaction() as session:
                # A try after only busy candidates waits for one (briefly) instead.
                return _main_attempt(session, incoming_order_id, now, wait_for_locks=attempt > 1)
        except RequisiteBusy as exc:
            error = exc
            if attempt < BUSY_ATTEMPTS:
                # Jittered, so that the workers that collided do not collide again.
                time.sleep(random.uniform(0, BUSY_PAUSE_SECONDS * attempt))  # noqa: S311
        except Exception as exc:
            error = exc
            break
    _log_failed_attempt(incoming_order_id, error)
    with atomic_transaction() as session:
        return record_failure(session, incoming_order_id=incoming_order_id, error=error, now=now)


# Raised by an attempt's plan (`_plan_attempt`), which writes nothing: the order's failure, not
# its batch's. Anything else (a database error above all, which aborts the transaction) fails the
# batch.
_ORDER_REFUSALS = (JivaPayException, FraudStop, IntakeExpired)


@transaction_flow
def process_incoming_batch(
    incoming_order_ids: Sequence[int], *, now: datetime | None = None
) -> list[ProcessResult]:
    """Assign several intake orders in one transaction: one claim, one commit.

    The rows are claimed together (`FOR UPDATE SKIP LOCKED`, in id order, so in intake order, with
    their stores and callback counts) and assigned one after the other as `process_incoming_order`
    does; the selector sees the counters and `last_used_at` this transaction already moved, so the
    round-robin goes on from order to order. An order is refused by its plan, before anything of
    it is written (no requisite, only busy ones, a fraud stop, a missing commission): the batch
    goes on without it, so no savepoint is needed, and after the commit the refusal is recorded in
    the order's own failure transaction, as for a single order; one that found every suitable
    requisite only busy is instead processed again on its own by `process_incoming_order`, whose
    pauses and tries keep lock timing from spending its retries. Anything else (a database error,
    a failed write, the commit) fails the batch: nothing of it was written, and each order is
    processed again on its own. The requisite and deposit rows the batch locked stay locked until
    its commit: other workers pass over them meanwhile (`SKIP LOCKED`). Results come back in the
    order of `incoming_order_ids`.
    """
    now = now or utcnow()
    ids = list(dict.fromkeys(incoming_order_ids))
    results: dict[int, ProcessResult] = {}
    refusals: list[tuple[int, Exception]] = []
    try:
        with atomic_transaction() as session:
            for position, claimed in enumerate(_claim_batch(session, ids)):
                incoming = claimed.incoming
                # Each assignment its own instant: `last_used_at` is the round-robin's key, and
                # requisites stamped alike would tie, handing the rest of the batch to the lowest id.
                at = now + timedelta(microseconds=position)
                try:
                    planned = _plan_attempt(session, incoming, at)
                except _ORDER_REFUSALS as refusal:
                    refusals.append((incoming.id, refusal))
                    continue
                results[incoming.id] = (
                    planned
                    if isinstance(planned, ProcessResult)
                    else _write_attempt(session, incoming, planned, at, callbacks=claimed.callbacks)
                )
    except Exception as batch_error:
        log.warning("order_batch_failed", size=len(ids), error=repr(batch_error))
        return [process_incoming_order(i, now=now) for i in ids]
    for incoming_order_id, error in refusals:
        if isinstance(error, RequisiteBusy):
            # Lock timing, not lack of capacity: the order gets its own attempts, with their pauses.
            results[incoming_order_id] = process_incoming_order(incoming_order_id, now=now)
            continue
        _log_failed_attempt(incoming_order_id, error)
        with atomic_transaction() as session:
            results[incoming_order_id] = record_failure(
                session, incoming_order_id=incoming_order_id, error=error, now=now
            )
    return [results.get(i) or _not_claimed(i) for i in ids]


def due_order_ids(
    session: Session, *, now: datetime, stuck_before: datetime, limit: int
) -> list[int]:
    """Intake orders a worker should (re)try now: due retries, and `new` orders whose message was
    lost (intake sets `next_attempt_at` to its own time, so both use the queue index)."""
    stmt = (
        select(IncomingOrder.id)
        .where(
            (
                (IncomingOrder.status == IncomingOrderStatus.RETRYING.value)
                & (IncomingOrder.next_attempt_at <= now)
            )
            | (
                (IncomingOrder.status == IncomingOrderStatus.NEW.value)
                & (IncomingOrder.next_attempt_at <= stuck_before)
            )
        )
        .order_by(IncomingOrder.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))
