"""Hands committed intake order ids on from a background thread, several per send when they
arrive together.

Two senders use it, each with its own `IntakeDispatcher`:

- the API process announces each committed intake order to the intake feed (`intake_queue`: one
  `NOTIFY` for the ids committed together, sent after the commit, off the request's thread);
- `jivapay intake-feed` (`worker.intake_feed`) publishes the ids it hears as Celery messages
  (`publish_tasks`): `orders.process` for a single id, `orders.process_batch` for more (a worker
  assigns them one after the other, each order in its own transaction). One Celery message per
  order costs about 0.6 ms of CPU, so the feed's dispatcher lingers `LINGER_SECONDS` for a batch
  to fill: a few milliseconds of latency buy several orders per message under load, while a lone
  order still goes out after the linger, alone.

`IntakeDispatcher.submit(id)` only appends the id to a list; one daemon thread takes everything
waiting, up to `max_batch` ids, and sends it in one call. The database stays the source of truth:
an id submitted here belongs to a committed intake row in status `new`, and if the process dies
before the thread sent it (or the send fails), the `orders.sweep_due` sweeper re-sends the order
after `STUCK_ORDER_SECONDS`, exactly as for a message lost anywhere else. A failed send is logged
and reported, never raised. At interpreter exit a dispatcher's backlog is sent first.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable

import structlog

from jivapay import task_names, task_queue

log = structlog.get_logger(__name__)

MAX_BATCH = 20  # orders per message: a worker assigns them one after the other
LINGER_SECONDS = 0.02  # measured: 0.6 ms of publish per intake at no linger (bench/intake.py)


class IntakeDispatcher:
    """Publishes submitted intake order ids from a background thread, coalescing a backlog."""

    def __init__(
        self,
        send: Callable[[list[int]], None] | None = None,
        *,
        max_batch: int = MAX_BATCH,
        linger_seconds: float = 0.0,
    ) -> None:
        """`send(ids)` delivers one batch (default: `publish_tasks`, the Celery messages)."""
        self.send = send or publish_tasks
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
                self._send(batch)
            finally:
                with self._cond:
                    self._sending = 0
                    self._cond.notify_all()

    def _send(self, batch: list[int]) -> None:
        try:
            self.send(batch)
        except Exception as exc:  # the sweeper re-sends what is still `new`
            log.warning("intake_dispatch_failed", count=len(batch), error=str(exc))
            from jivapay.utils.notifications import report_critical_error

            report_critical_error(exc, "intake dispatch failed", count=len(batch))


def publish_tasks(incoming_order_ids: list[int]) -> None:
    """One Celery message for `incoming_order_ids`."""
    if len(incoming_order_ids) == 1:
        task_queue.send_task(
            task_names.ORDERS_PROCESS, incoming_order_ids[0], **task_queue.PUBLISH_ONCE
        )
    else:
        task_queue.send_task(
            task_names.ORDERS_PROCESS_BATCH, incoming_order_ids, **task_queue.PUBLISH_ONCE
        )


dispatcher = IntakeDispatcher(linger_seconds=LINGER_SECONDS)
atexit.register(dispatcher.flush, 2.0)
