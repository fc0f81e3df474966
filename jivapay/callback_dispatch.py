"""How a committed status change's callback delivery reaches the callback workers:
`publish_deliveries`, sent from a `batch_dispatch.BatchDispatcher` thread (`dispatcher`).

Every status change writes a callback delivery row (`services.order_events`) and, once its
transaction commits, submits the row's id here instead of publishing a Celery message from the
committing thread: one message cost the assigning worker about 0.6 ms of CPU (1.6-1.8 ms on a
slow spell of the development machine, a fifth of an assignment; docs/performance.md). The thread
publishes `callbacks.deliver` for a lone delivery and `callbacks.deliver_batch` for the ones
committed within `LINGER_SECONDS` of each other, which the callback worker attempts side by side
(`worker.callback_tasks`). A delivery the process did not publish (killed, broker down) is a
pending row that the `callbacks.sweep_due` sweeper re-sends.
"""

from __future__ import annotations

import atexit

from jivapay import task_names
from jivapay.batch_dispatch import BatchDispatcher, task_publisher

# Deliveries per message: the callback worker attempts up to `callback_tasks.BATCH_THREADS` of them
# at a time.
MAX_BATCH = 20
# A merchant's callback may leave up to this much later than its commit; under load it buys
# several deliveries per message.
LINGER_SECONDS = 0.02


# One Celery message per batch: `callbacks.deliver` for one id, `callbacks.deliver_batch` for more.
publish_deliveries = task_publisher(
    task_names.CALLBACKS_DELIVER, task_names.CALLBACKS_DELIVER_BATCH
)


dispatcher = BatchDispatcher(
    publish_deliveries, max_batch=MAX_BATCH, linger_seconds=LINGER_SECONDS, name="callback-dispatch"
)
atexit.register(dispatcher.flush, 2.0)
