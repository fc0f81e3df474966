"""How the intake feed hands committed intake orders to the workers: `publish_tasks`, sent from a
`batch_dispatch.BatchDispatcher` thread (`dispatcher`).

`jivapay intake-feed` (`worker.intake_feed`) submits the ids it hears; the thread publishes them
as Celery messages: `orders.process` for a single id, `orders.process_batch` for more (a worker
assigns them one after the other, each order in its own transaction). One Celery message per order
costs about 0.6 ms of CPU, so the dispatcher lingers `LINGER_SECONDS` for a batch to fill: a few
milliseconds of latency buy several orders per message under load, while a lone order still goes
out after the linger, alone. An order the process did not publish (killed, broker down) is a
`new` row that the `orders.sweep_due` sweeper re-sends after `STUCK_ORDER_SECONDS`.
"""

from __future__ import annotations

import atexit

from jivapay import task_names
from jivapay.batch_dispatch import BatchDispatcher, task_publisher

MAX_BATCH = 20  # orders per message: a worker assigns them one after the other
LINGER_SECONDS = 0.02  # measured: 0.6 ms of publish per intake at no linger (bench/intake.py)


# One Celery message per batch: `orders.process` for one id, `orders.process_batch` for more.
publish_tasks = task_publisher(task_names.ORDERS_PROCESS, task_names.ORDERS_PROCESS_BATCH)


dispatcher = BatchDispatcher(
    publish_tasks, max_batch=MAX_BATCH, linger_seconds=LINGER_SECONDS, name="intake-dispatch"
)
atexit.register(dispatcher.flush, 2.0)
