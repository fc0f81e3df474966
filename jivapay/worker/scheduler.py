"""The beat schedule: which periodic task runs when (`celery_app.conf.beat_schedule`).

Every periodic task is a sweeper: it finds in the database what is due and enqueues or performs
it, so a crash, a lost message or a stopped worker never loses work for good. Run exactly one beat
process per deployment (`jivapay beat`); workers scale out freely.

Now:
- `system.heartbeat` every 60 s: proves beat runs (records `jivapay:beat:last` in Redis).

Added by later issues, one entry each:
- due retries: orders in `retrying` whose next attempt time has come;
- stuck orders: orders claimed by a worker that died mid-processing;
- expiries: PayIns not paid / not confirmed and PayOuts not done within their timeouts;
- dispute escalation: disputes unanswered past their deadline;
- due callbacks: merchant callbacks waiting for their next delivery attempt;
- idempotency-key cleanup: expired gateway idempotency keys;
- reconciliation: balances against their history (reports, never corrects).
"""

from __future__ import annotations

from typing import Any

HEARTBEAT_INTERVAL_SECONDS = 60.0

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "system-heartbeat": {
        "task": "system.heartbeat",
        "schedule": HEARTBEAT_INTERVAL_SECONDS,
        # A heartbeat that waited longer than its interval says nothing new: drop it.
        "options": {"expires": HEARTBEAT_INTERVAL_SECONDS},
    },
}
