"""The scheduler's sweepers: they recover what a lost message or a crash left behind and enforce
deadlines. The database is the source of truth; each sweeper reads it and acts in short
transactions of its own (one per order for state changes, so no lock is held for long).

- `due_intake_orders`: retries whose time has come and `new` orders nobody processed (lost message
  or a worker that died mid-transaction: its claim was rolled back with it);
- `expire_overdue_orders`: pending orders past their deadline become `expired` (hold released);
- `escalate_unconfirmed_orders`: paid orders the trader did not confirm in time become disputes;
- `prune_turnover_buckets`: minute buckets older than any window can reach;
- `run_reconciliation`: every money invariant, each discrepancy reported as a critical error.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select

from jivapay.database.models import OrderHistory
from jivapay.database.utils import atomic_transaction, read_session, transaction_flow
from jivapay.enums import OrderStatus
from jivapay.services import order_status_manager as osm
from jivapay.services import requisite_counters
from jivapay.services.order_processor import due_order_ids
from jivapay.services.reconciliation import Discrepancy, reconcile
from jivapay.utils.config_loader import runtime_settings
from jivapay.utils.exceptions import InvalidStatusTransition
from jivapay.utils.notifications import report_critical_error

log = structlog.get_logger(__name__)

BATCH = 500


def due_intake_orders(*, now: datetime, limit: int = BATCH) -> list[int]:
    """Ids of intake orders to (re)enqueue now."""
    with read_session() as session:
        stuck = timedelta(seconds=runtime_settings(session).STUCK_ORDER_SECONDS)
        return due_order_ids(session, now=now, stuck_before=now - stuck, limit=limit)


def _overdue(column: Any, status: OrderStatus, now: datetime, limit: int) -> list[str]:
    # `column <= now`: `order_status_manager.deadline_passed` in SQL, which the move checks again.
    with read_session() as session:
        stmt = (
            select(OrderHistory.public_id)
            .where(OrderHistory.status == status.value, column <= now)
            .order_by(column)
            .limit(limit)
        )
        return list(session.scalars(stmt))


@transaction_flow
def _each(public_ids: list[str], action: str, move: Callable[..., Any]) -> int:
    done = 0
    for public_id in public_ids:
        try:
            with atomic_transaction() as session:
                result = move(session, public_id=public_id)
            done += int(result.changed)
        except InvalidStatusTransition:
            continue  # the order moved on meanwhile (paid, confirmed, canceled): nothing to do
        except Exception as exc:
            report_critical_error(exc, f"sweeper failed to {action} an order", order_id=public_id)
    return done


def expire_overdue_orders(*, now: datetime, limit: int = BATCH) -> int:
    """Expire pending orders whose payment deadline passed; returns how many."""
    ids = _overdue(OrderHistory.expires_at, OrderStatus.PENDING, now, limit)
    return _each(
        ids,
        "expire",
        lambda session, public_id: osm.expire_order(session, public_id=public_id, now=now),
    )


def escalate_unconfirmed_orders(*, now: datetime, limit: int = BATCH) -> int:
    """Turn paid orders past their confirmation deadline into disputes; returns how many."""
    ids = _overdue(OrderHistory.confirm_deadline_at, OrderStatus.PAID, now, limit)
    return _each(
        ids,
        "escalate",
        lambda session, public_id: osm.escalate_unconfirmed(session, public_id=public_id, now=now),
    )


@transaction_flow
def prune_turnover_buckets(*, now: datetime) -> int:
    """Delete minute buckets no rolling window can reach any more; returns how many."""
    with atomic_transaction() as session:
        return requisite_counters.prune_old_turnover(session, now=now)


def run_reconciliation() -> list[Discrepancy]:
    """Check every money invariant; report each discrepancy as a critical error."""
    with read_session() as session:
        found = reconcile(session)
    for item in found:
        report_critical_error(None, "reconciliation discrepancy", discrepancy=str(item))
    log.info("reconciliation_done", discrepancies=len(found))
    return found
