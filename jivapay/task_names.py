"""The name of every Celery task: the one vocabulary shared by the senders and the worker.

Services enqueue by name (`enqueue_after_commit(session, ORDERS_PROCESS, order_id)`) and the worker
registers its tasks under the same constants, so neither side imports the other. Names are
`area.action`; renaming one is a deploy-time change (messages in flight carry the old name).
"""

from __future__ import annotations

from typing import Final

SYSTEM_PING: Final = "system.ping"
SYSTEM_HEARTBEAT: Final = "system.heartbeat"

ORDERS_PROCESS: Final = "orders.process"
ORDERS_PROCESS_BATCH: Final = "orders.process_batch"
ORDERS_SWEEP_DUE: Final = "orders.sweep_due"
ORDERS_EXPIRE_OVERDUE: Final = "orders.expire_overdue"
ORDERS_ESCALATE_UNCONFIRMED: Final = "orders.escalate_unconfirmed"

CALLBACKS_DELIVER: Final = "callbacks.deliver"
CALLBACKS_DELIVER_BATCH: Final = "callbacks.deliver_batch"
CALLBACKS_SWEEP_DUE: Final = "callbacks.sweep_due"

REFERENCE_REFRESH_RATES: Final = "reference.refresh_rates"

MAINTENANCE_PRUNE_TURNOVER: Final = "maintenance.prune_turnover"
MAINTENANCE_RECONCILE: Final = "maintenance.reconcile"
GATEWAY_CLEANUP_IDEMPOTENCY_KEYS: Final = "gateway.cleanup_idempotency_keys"
