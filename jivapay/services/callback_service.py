"""Merchant callbacks: delivering the rows `order_events` writes, the retry schedule,
the store's callback switch, and what merchants do with deliveries (list, re-send, rotate secret).

Delivery states (`callback_deliveries.status`):

| from    | event                                                    | to                           |
|---------|----------------------------------------------------------|------------------------------|
| pending | 2xx answer                                               | delivered                    |
| pending | 410 Gone                                                 | disabled (+ the store's callbacks disabled, its other pending deliveries too) |
| pending | other answer, 3xx, network error, refused address        | pending, next_attempt_at = now + delay (schedule, jitter, Retry-After) |
| pending | the same with CALLBACK_MAX_ATTEMPTS spent, or a malformed URL | failed                  |
| pending | due while the store's callbacks are disabled             | disabled (nothing sent)      |
| any     | the merchant re-sends it                                 | pending now, attempts counted anew, the store's callbacks enabled again |

`deliver_callback(delivery_id)` orchestrates one attempt in two short transactions with no lock
held during the HTTP call: (1) claim: lock the row (`SKIP LOCKED`), check it is pending and due,
count the attempt and push `next_attempt_at` out by a lease (so neither a duplicate message nor the
sweeper starts a second attempt meanwhile; if the worker dies, the lease runs out and the sweeper
re-sends), read URL, payload and secret, commit; (2) send; (3) record: lock the row again, write the
attempt row, and apply the result only if nobody else moved the delivery meanwhile (a delivery
another attempt delivered is never overwritten). Deliveries are at least once: merchants dedupe on
`webhook-id`.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from jivapay import __version__, task_names
from jivapay.config import get_settings
from jivapay.database.base import utcnow
from jivapay.database.models import (
    CallbackDelivery,
    CallbackDeliveryAttempt,
    IncomingOrder,
    MerchantStore,
)
from jivapay.database.utils import atomic_transaction, enqueue_after_commit, transaction_flow
from jivapay.enums import AuditLevel, CallbackStatus
from jivapay.schemas.callbacks import (
    CallbackAttemptRead,
    CallbackDeliveryPage,
    CallbackDeliveryRead,
)
from jivapay.security import generate_callback_secret
from jivapay.services import callback_sender, webhook_signing
from jivapay.services.audit_logger import log_event
from jivapay.services.callback_sender import SendResult
from jivapay.utils.config_loader import runtime_settings, standalone_runtime_settings
from jivapay.utils.exceptions import NotFound, ValidationFailed

log = structlog.get_logger(__name__)

# The retry schedule: about 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h, 24 h. Entry n is the
# wait after the n-th failed attempt; the last entry repeats if CALLBACK_MAX_ATTEMPTS is larger.
DEFAULT_RETRY_SCHEDULE_SECONDS: tuple[float, ...] = (
    5,
    30,
    120,
    600,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    24 * 3600,
)
JITTER = 0.15  # each wait is the scheduled one +-15%, so failed endpoints are not hit in lockstep
MAX_DELAY_SECONDS = 24 * 3600.0  # a long Retry-After is honoured up to this
LEASE_MARGIN_SECONDS = 30  # beyond the request timeout, before a claimed attempt counts as lost
USER_AGENT = f"JivaPay-Callbacks/{__version__}"
SKIPPED = "skipped"

_PENDING = CallbackStatus.PENDING.value


T = TypeVar("T", CallbackDelivery, MerchantStore)


def _lock(session: Session, model: type[T], obj_id: int) -> T | None:
    # populate_existing: the values the lock protects, not what this session cached before it.
    stmt = (
        select(model)
        .where(model.id == obj_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one_or_none()


# --------------------------------------------------------------------------- schedule


def retry_schedule(session: Session | None = None) -> tuple[float, ...]:
    """The waits between attempts: `CALLBACK_RETRY_SCHEDULE_SECONDS` when set and valid, else §7's."""
    raw = (
        runtime_settings(session) if session is not None else standalone_runtime_settings()
    ).CALLBACK_RETRY_SCHEDULE_SECONDS
    if raw is None:
        return DEFAULT_RETRY_SCHEDULE_SECONDS
    try:
        schedule = tuple(float(v) for v in raw)
    except (TypeError, ValueError):
        schedule = ()
    if not schedule or any(v <= 0 for v in schedule):
        log.warning("invalid_callback_retry_schedule", value=raw)
        return DEFAULT_RETRY_SCHEDULE_SECONDS
    return schedule


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def next_retry_delay(
    failed_attempts: int,
    *,
    schedule: tuple[float, ...],
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after `failed_attempts` failures: the jittered schedule or Retry-After,
    whichever is longer, capped at 24 h."""
    base = schedule[min(max(failed_attempts, 1), len(schedule)) - 1]
    delay = base * (rng or random).uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, MAX_DELAY_SECONDS)


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class ClaimedDelivery:
    """What an attempt needs, read in the claim transaction (nothing locked once it returns)."""

    delivery_id: int
    store_id: int
    event_id: str
    url: str
    body: bytes
    secret: str
    attempt: int


@dataclass(frozen=True)
class DeliveryOutcome:
    """The delivery after one call of `deliver_callback` (`status` is `skipped` when not due)."""

    delivery_id: int
    status: str
    attempt: int | None = None
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent and signed."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def claim_delivery(
    session: Session, *, delivery_id: int, now: datetime, lease_seconds: float
) -> ClaimedDelivery | DeliveryOutcome:
    """Lock a due pending delivery, count the attempt and lease it; else say why not (flushes)."""
    row = session.scalars(
        select(CallbackDelivery)
        .where(CallbackDelivery.id == delivery_id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None or row.status != _PENDING:
        return DeliveryOutcome(delivery_id, row.status if row else SKIPPED)
    if row.next_attempt_at is not None and row.next_attempt_at > now:
        return DeliveryOutcome(delivery_id, SKIPPED, next_attempt_at=row.next_attempt_at)
    store = session.get(MerchantStore, row.store_id)
    if store is None or store.callbacks_disabled_at is not None:
        row.status = CallbackStatus.DISABLED.value
        row.next_attempt_at = None
        row.last_error = "callbacks are disabled for this store"
        session.flush()
        return DeliveryOutcome(delivery_id, row.status, error=row.last_error)
    if not row.url:
        row.status = CallbackStatus.FAILED.value
        row.next_attempt_at = None
        row.last_error = "no callback URL"
        session.flush()
        return DeliveryOutcome(delivery_id, row.status, error=row.last_error)
    max_attempts = runtime_settings(session).CALLBACK_MAX_ATTEMPTS
    if row.attempt_count >= max_attempts:  # whatever re-queued it, the limit holds
        row.status = CallbackStatus.FAILED.value
        row.next_attempt_at = None
        row.last_error = f"gave up after {row.attempt_count} attempts"
        session.flush()
        return DeliveryOutcome(delivery_id, row.status, error=row.last_error)
    row.attempt_count += 1
    row.next_attempt_at = now + timedelta(seconds=lease_seconds)
    session.flush()
    return ClaimedDelivery(
        delivery_id=row.id,
        store_id=row.store_id,
        event_id=row.event_id,
        url=row.url,
        body=encode_payload(row.payload),
        secret=store.callback_secret,
        attempt=row.attempt_count,
    )


def _disable_store(
    session: Session, *, store_id: int, delivery: CallbackDelivery, now: datetime
) -> str:
    store = _lock(session, MerchantStore, store_id)
    reason = (
        f"The callback endpoint answered 410 Gone at {now.isoformat(timespec='seconds')} "
        f"(event {delivery.event_id}); callbacks are disabled. Re-send a delivery once the "
        "endpoint is fixed to enable them again."
    )
    if store is not None and store.callbacks_disabled_at is None:
        store.callbacks_disabled_at = now
        store.callbacks_disabled_reason = reason
        log_event(
            session,
            action="store.callbacks_disabled",
            target_entity="merchant_store",
            target_id=store_id,
            details={"event_id": delivery.event_id, "status_code": 410},
            level=AuditLevel.WARNING,
        )
    session.execute(
        update(CallbackDelivery)
        .where(
            CallbackDelivery.store_id == store_id,
            CallbackDelivery.status == _PENDING,
            CallbackDelivery.id != delivery.id,
        )
        .values(
            status=CallbackStatus.DISABLED.value,
            next_attempt_at=None,
            last_error="callbacks are disabled for this store",
        )
    )
    return reason


def record_attempt(
    session: Session,
    *,
    claimed: ClaimedDelivery,
    result: SendResult,
    attempted_at: datetime,
    now: datetime,
) -> DeliveryOutcome:
    """Write the attempt row and move the delivery by its result, unless it moved meanwhile."""
    row = _lock(session, CallbackDelivery, claimed.delivery_id)
    if row is None:  # deleted with its store meanwhile
        return DeliveryOutcome(claimed.delivery_id, SKIPPED)
    session.add(
        CallbackDeliveryAttempt(
            delivery_id=row.id,
            attempted_at=attempted_at,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            error=result.error,
            response_excerpt=result.response_excerpt,
        )
    )
    error = result.error or (None if result.delivered else f"HTTP {result.status_code}")
    ours = row.status == _PENDING and row.attempt_count == claimed.attempt
    if row.status == CallbackStatus.DELIVERED.value or (not ours and not result.delivered):
        # Another attempt (or a re-send) owns the delivery now: only the attempt row is ours.
        session.flush()
        return DeliveryOutcome(row.id, row.status, claimed.attempt, result.status_code, error)
    row.last_status_code = result.status_code
    row.last_error = error
    row.next_attempt_at = None
    if result.delivered:
        row.status = CallbackStatus.DELIVERED.value
        row.delivered_at = now
    elif result.status_code == 410:
        row.status = CallbackStatus.DISABLED.value
        row.last_error = _disable_store(session, store_id=row.store_id, delivery=row, now=now)
    elif result.permanent or row.attempt_count >= int(
        runtime_settings(session).CALLBACK_MAX_ATTEMPTS
    ):
        row.status = CallbackStatus.FAILED.value
    else:
        delay = next_retry_delay(
            row.attempt_count,
            schedule=retry_schedule(session),
            retry_after=parse_retry_after(result.retry_after, now=now),
        )
        row.next_attempt_at = now + timedelta(seconds=delay)
    session.flush()
    return DeliveryOutcome(
        row.id, row.status, claimed.attempt, result.status_code, error, row.next_attempt_at
    )


@transaction_flow
def deliver_callback(delivery_id: int, *, now: datetime | None = None) -> DeliveryOutcome:
    """Make one attempt at a due pending delivery (owns its transactions; see the module doc).

    `now` moves the clock of the due check and of the schedule (tests); the `webhook-timestamp`
    is always the real time of sending, since the merchant checks it against their clock.
    """
    with atomic_transaction() as session:
        timeout = float(runtime_settings(session).CALLBACK_TIMEOUT_SECONDS)
        claimed = claim_delivery(
            session,
            delivery_id=delivery_id,
            now=now or utcnow(),
            lease_seconds=timeout + LEASE_MARGIN_SECONDS,
        )
    if isinstance(claimed, DeliveryOutcome):
        return claimed
    attempted_at = utcnow()
    try:
        headers = webhook_signing.signed_headers(
            claimed.secret, msg_id=claimed.event_id, timestamp=int(time.time()), body=claimed.body
        )
    except webhook_signing.WebhookVerificationError as exc:
        result = SendResult(None, 0, error=f"store callback secret unusable: {exc}", permanent=True)
    else:
        headers |= {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
        }
        result = callback_sender.send(
            claimed.url,
            body=claimed.body,
            headers=headers,
            timeout=timeout,
            allow_private=get_settings().CALLBACK_ALLOW_PRIVATE_NETWORKS,
        )
    with atomic_transaction() as session:
        outcome = record_attempt(
            session, claimed=claimed, result=result, attempted_at=attempted_at, now=now or utcnow()
        )
    log.info(
        "callback_attempt",
        delivery_id=delivery_id,
        event_id=claimed.event_id,
        attempt=claimed.attempt,
        status=outcome.status,
        status_code=result.status_code,
        error=result.error,
        duration_ms=result.duration_ms,
    )
    return outcome


def due_delivery_ids(session: Session, *, now: datetime, limit: int = 500) -> list[int]:
    """Pending deliveries whose attempt is due at `now` (the partial index `ix_callback_deliveries_due`)."""
    stmt = (
        select(CallbackDelivery.id)
        .where(CallbackDelivery.status == _PENDING, CallbackDelivery.next_attempt_at <= now)
        .order_by(CallbackDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def enqueue_delivery(session: Session, delivery_id: int) -> None:
    """Send `callbacks.deliver` for `delivery_id` once `session` commits."""
    enqueue_after_commit(session, task_names.CALLBACKS_DELIVER, delivery_id)


# --------------------------------------------------------------------------- merchants' view


_DeliveryRead = TypeVar("_DeliveryRead", bound=BaseModel)


def delivery_reads(
    session: Session,
    rows: Sequence[tuple[CallbackDelivery, str]],
    read: type[_DeliveryRead],
) -> list[_DeliveryRead]:
    """Deliveries (each with its order's public id) with their attempts, as `read` shapes them:
    the store's `CallbackDeliveryRead` or staff's, which adds the store id (two queries)."""
    ids = [d.id for d, _ in rows]
    attempts: dict[int, list[CallbackAttemptRead]] = {i: [] for i in ids}
    if ids:
        stmt = (
            select(CallbackDeliveryAttempt)
            .where(CallbackDeliveryAttempt.delivery_id.in_(ids))
            .order_by(CallbackDeliveryAttempt.id)
        )
        for a in session.scalars(stmt):
            attempts[a.delivery_id].append(CallbackAttemptRead.model_validate(a))
    return [
        read.model_validate(
            {
                "id": d.id,
                "store_id": d.store_id,
                "event_id": d.event_id,
                "event_type": d.event_type,
                "order_id": public_id,
                "status": CallbackStatus(d.status),
                "url": d.url,
                "attempt_count": d.attempt_count,
                "next_attempt_at": d.next_attempt_at,
                "last_status_code": d.last_status_code,
                "last_error": d.last_error,
                "delivered_at": d.delivered_at,
                "created_at": d.created_at,
                "updated_at": d.updated_at,
                "attempts": attempts[d.id],
            }
        )
        for d, public_id in rows
    ]


def _views(
    session: Session, rows: Sequence[tuple[CallbackDelivery, str]]
) -> list[CallbackDeliveryRead]:
    return delivery_reads(session, rows, CallbackDeliveryRead)


def _store(session: Session, store_id: int) -> MerchantStore:
    store = session.get(MerchantStore, store_id)
    if store is None:
        raise NotFound("Store not found", code="store_not_found")
    return store


def delivery_page(
    session: Session,
    conditions: Sequence[ColumnElement[bool]],
    read: type[_DeliveryRead],
    *,
    limit: int,
    offset: int,
) -> tuple[list[_DeliveryRead], int]:
    """Deliveries matching `conditions` (on deliveries and their intake order), newest first,
    shaped by `read`, and how many match."""
    stmt = (
        select(CallbackDelivery, IncomingOrder.public_id)
        .join(IncomingOrder, IncomingOrder.id == CallbackDelivery.incoming_order_id)
        .where(*conditions)
    )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    page = session.execute(
        stmt.order_by(CallbackDelivery.created_at.desc(), CallbackDelivery.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return delivery_reads(session, [(d, p) for d, p in page], read), total


def _filters(
    order_public_id: str | None, status: CallbackStatus | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if order_public_id is not None:
        conditions.append(IncomingOrder.public_id == order_public_id)
    if status is not None:
        conditions.append(CallbackDelivery.status == CallbackStatus(status).value)
    return conditions


def list_deliveries(
    session: Session,
    *,
    store_id: int,
    order_public_id: str | None = None,
    status: CallbackStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> CallbackDeliveryPage:
    """A store's deliveries, newest first, with their attempts (filters: order, status)."""
    store = _store(session, store_id)
    conditions = [CallbackDelivery.store_id == store_id, *_filters(order_public_id, status)]
    items, total = delivery_page(
        session, conditions, CallbackDeliveryRead, limit=limit, offset=offset
    )
    return CallbackDeliveryPage(
        items=items,
        total=total,
        limit=limit,
        offset=offset,
        callbacks_disabled_at=store.callbacks_disabled_at,
        callbacks_disabled_reason=store.callbacks_disabled_reason,
    )


def list_merchant_deliveries(
    session: Session,
    *,
    merchant_id: int,
    store_id: int | None = None,
    order_public_id: str | None = None,
    status: CallbackStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[CallbackDeliveryRead], int]:
    """Deliveries across a merchant's stores (or one of them), newest first, with their attempts."""
    own_stores = select(MerchantStore.id).where(MerchantStore.merchant_id == merchant_id)
    conditions = [CallbackDelivery.store_id.in_(own_stores), *_filters(order_public_id, status)]
    if store_id is not None:
        conditions.append(CallbackDelivery.store_id == store_id)
    return delivery_page(session, conditions, CallbackDeliveryRead, limit=limit, offset=offset)


def merchant_delivery_store(session: Session, *, merchant_id: int, delivery_id: int) -> int:
    """The store of a merchant's delivery; another merchant's delivery is not found."""
    store_id = session.scalar(
        select(CallbackDelivery.store_id)
        .join(MerchantStore, MerchantStore.id == CallbackDelivery.store_id)
        .where(CallbackDelivery.id == delivery_id, MerchantStore.merchant_id == merchant_id)
    )
    if store_id is None:
        raise NotFound("Callback delivery not found", code="callback_delivery_not_found")
    return int(store_id)


def resend_delivery(
    session: Session,
    *,
    store_id: int,
    delivery_id: int,
    actor_user_id: int | None = None,
    ip_address: str | None = None,
) -> CallbackDeliveryRead:
    """Queue a delivery of this store again now; re-enables the store's callbacks if disabled
    (audited with the actor). The caller audits the resend itself (`store_resend` does)."""
    row = session.scalars(
        select(CallbackDelivery)
        .where(CallbackDelivery.id == delivery_id, CallbackDelivery.store_id == store_id)
        .with_for_update()
        # The values the lock protects, not what this session may have cached before.
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:  # another store's delivery is as unknown as a missing one
        raise NotFound("Callback delivery not found", code="callback_delivery_not_found")
    store = _lock(session, MerchantStore, store_id)
    incoming = session.get(IncomingOrder, row.incoming_order_id)
    assert store is not None and incoming is not None  # foreign keys
    # The URL is chosen as at the event, from today's settings (the merchant may have fixed it).
    url = incoming.callback_url or store.callback_url
    if not url:
        raise ValidationFailed(
            "The store has no callback URL to send to", code="callback_url_missing"
        )
    now = utcnow()
    if store.callbacks_disabled_at is not None:
        # Asking for a re-send says the endpoint works again.
        log_event(
            session,
            action="store.callbacks_enabled",
            user_id=actor_user_id,
            ip_address=ip_address,
            target_entity="merchant_store",
            target_id=store_id,
            details={
                "via": "resend",
                "delivery_id": row.id,
                "was": store.callbacks_disabled_reason,
            },
        )
        store.callbacks_disabled_at = None
        store.callbacks_disabled_reason = None
    row.url = url
    row.status = _PENDING
    row.attempt_count = 0
    row.next_attempt_at = now
    row.delivered_at = None
    session.flush()
    enqueue_delivery(session, row.id)
    return _views(session, [(row, incoming.public_id)])[0]


def store_resend(
    session: Session,
    *,
    store_id: int,
    delivery_id: int,
    actor_user_id: int | None,
    ip_address: str | None,
) -> CallbackDeliveryRead:
    """A merchant's (or its store key's) resend of one of the store's deliveries, audited with
    the delivery's state before and after."""
    before = session.scalar(
        select(CallbackDelivery.status).where(
            CallbackDelivery.id == delivery_id, CallbackDelivery.store_id == store_id
        )
    )
    view = resend_delivery(
        session,
        store_id=store_id,
        delivery_id=delivery_id,
        actor_user_id=actor_user_id,
        ip_address=ip_address,
    )
    log_event(
        session,
        action="callback.resent",
        user_id=actor_user_id,
        ip_address=ip_address,
        target_entity="callback_delivery",
        target_id=delivery_id,
        details={"store_id": store_id, "old": {"status": before}, "new": {"status": view.status}},
    )
    return view


def rotate_callback_secret(session: Session, *, store_id: int) -> str:
    """Give the store a new callback signing secret (used from the next attempt on) and return it."""
    store = _lock(session, MerchantStore, store_id)
    if store is None:
        raise NotFound("Store not found", code="store_not_found")
    secret = generate_callback_secret()
    store.callback_secret = secret
    log_event(
        session,
        action="store.callback_secret_rotated",
        target_entity="merchant_store",
        target_id=store_id,
        level=AuditLevel.WARNING,
    )
    session.flush()
    return secret
