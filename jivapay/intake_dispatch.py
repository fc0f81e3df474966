"""Publishes intake order ids as Celery messages, several per message when they arrive together.

`jivapay intake-feed` (`worker.intake_feed`) hears the committed intake orders and submits their
ids here. Publishing one Celery message per order costs about 0.6 ms of CPU (a broker client and a
message built and sent each time), so `IntakeDispatcher.submit(id)` only appends the id to a list;
one daemon thread takes everything waiting, up to `MAX_BATCH` ids, and publishes it as one
message: `orders.process` for a single id, `orders.process_batch` for more (a worker assigns them
one after the other, each order in its own transaction). The thread lingers up to
`linger_seconds` for a batch to fill: a few milliseconds of latency buy several orders per
message under load, while a lone order still goes out after the linger, alone.

The database stays the source of truth: an id submitted here belongs to a committed intake row in
status `new`, and if the process dies before the thread published it (or the broker refuses the
publish), the `orders.sweep_due` sweeper re-sends the order after `STUCK_ORDER_SECONDS`, exactly
as for a message lost anywhere else. At interpreter exit the thread's backlog is published first.
"""

from __future__ import annotations

import atexit
import os
import threading

import structlog

from jivapay import task_names, task_queue

log = structlog.get_logger(__name__)

MAX_BATCH = 20  # orders per message: a worker assigns them one after the other
LINGER_SECONDS = 0.02  # measured: 0.6 ms of publish per intake at no linger (bench/intake.py)


class IntakeDispatcher:
    """Publishes submitted intake order ids from a background thread, coalescing a backlog."""

    def __init__(self, max_batch: int = MAX_BATCH, linger_seconds: float = 0.0) -> None:
        self.max_batch, self.linger_seconds = max_batch, linger_seconds
        self._reset()

    def _reset(self) -> None:
        # Also after a fork: the child gets the parent's lists but not its thread.
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._waiting: list[int] = []
        self._sending = 0
        self._thread: threading.Thread | None = None

    def submit(self, incoming_order_id: int) -> None:
        """Queue `incoming_order_id` (a committed `new` intake row) for the workers."""
        if self._pid != os.getpid():
            self._reset()
        with self._cond:
            self._waiting.append(incoming_order_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="jivapay-intake-dispatch", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is published (or failed); False on timeout."""
        if self._pid != os.getpid():
            return True
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._sending, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._waiting))
                if self.linger_seconds and len(self._waiting) < self.max_batch:
                    self._cond.wait_for(
                        lambda: len(self._waiting) >= self.max_batch, self.linger_seconds
                    )
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                self._sending = len(batch)
            try:
                publish(batch)
            finally:
                with self._cond:
                    self._sending = 0
                    self._cond.notify_all()


def publish(incoming_order_ids: list[int]) -> None:
    """One message for `incoming_order_ids`; a failure is logged and reported, never raised (the
    sweeper re-sends what is still `new`)."""
    try:
        if len(incoming_order_ids) == 1:
            task_queue.send_task(
                task_names.ORDERS_PROCESS, incoming_order_ids[0], **task_queue.PUBLISH_ONCE
            )
        else:
            task_queue.send_task(
                task_names.ORDERS_PROCESS_BATCH, incoming_order_ids, **task_queue.PUBLISH_ONCE
            )
    except Exception as exc:
        log.warning("intake_dispatch_failed", count=len(incoming_order_ids), error=str(exc))
        from jivapay.utils.notifications import report_critical_error

        report_critical_error(exc, "intake dispatch failed", count=len(incoming_order_ids))


dispatcher = IntakeDispatcher(linger_seconds=LINGER_SECONDS)
atexit.register(dispatcher.flush, 2.0)
