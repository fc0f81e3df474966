"""The beat schedule: which periodic task runs when (`celery_app.conf.beat_schedule`).

Every periodic task is a sweeper: it finds in the database what is due and enqueues or performs
it, so a crash, a lost message or a stopped worker never loses work for good. Run exactly one beat
process per deployment (`jivapay beat`); workers scale out freely.

- `system.heartbeat` (60 s): proves beat runs (records `jivapay:beat:last` in Redis);
- `orders.sweep_due` (10 s): due retries, and `new` orders whose message was lost (or that the
  intake feed missed) or whose worker died mid-transaction (its claim rolled back with it) after
  `STUCK_ORDER_SECONDS`;
- `orders.expire_overdue` (30 s): pending orders past their deadline expire, holds released;
- `orders.escalate_unconfirmed` (60 s): paid orders past the trader's confirmation deadline become
  disputes;
- `maintenance.prune_turnover` (1 h): turnover buckets no limit window can reach;
- `gateway.cleanup_idempotency_keys` (1 h): expired gateway idempotency keys;
- `maintenance.reconcile` (daily): balances against their history, open holds and the orders
  (reports, never corrects);
- `callbacks.sweep_due` (15 s): pending merchant callbacks that are due (long retry waits, lost
  messages, attempts a crashed worker left leased);
- `reference.refresh_rates` (15 s tick): refreshes exchange rates from `EXCHANGE_RATE_SOURCE_URL`
  when `RATE_REFRESH_INTERVAL_SECONDS` passed since the last run (the interval is a run-time
  setting, so the task decides, not the schedule).

The order and callback sweeps re-send each id at most once per interval (`jivapay.worker.requeue`),
so a queue that is merely backed up does not get copies of what it already holds.
"""

from __future__ import annotations

from typing import Any

from jivapay import task_names

HEARTBEAT_INTERVAL_SECONDS = 60.0


def _every(task: str, seconds: float) -> dict[str, Any]:
    # A sweep that waited longer than its interval is superseded by the next one: let it expire.
    return {"task": task, "schedule": seconds, "options": {"expires": seconds}}


BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "system-heartbeat": _every(task_names.SYSTEM_HEARTBEAT, HEARTBEAT_INTERVAL_SECONDS),
    "orders-sweep-due": _every(task_names.ORDERS_SWEEP_DUE, 10.0),
    "orders-expire-overdue": _every(task_names.ORDERS_EXPIRE_OVERDUE, 30.0),
    "orders-escalate-unconfirmed": _every(task_names.ORDERS_ESCALATE_UNCONFIRMED, 60.0),
    "maintenance-prune-turnover": _every(task_names.MAINTENANCE_PRUNE_TURNOVER, 3600.0),
    "gateway-cleanup-idempotency-keys": _every(task_names.GATEWAY_CLEANUP_IDEMPOTENCY_KEYS, 3600.0),
    "maintenance-reconcile": _every(task_names.MAINTENANCE_RECONCILE, 86400.0),
    "callbacks-sweep-due": _every(task_names.CALLBACKS_SWEEP_DUE, 15.0),
    "reference-refresh-rates": _every(task_names.REFERENCE_REFRESH_RATES, 15.0),
}
