"""Hands committed rows' ids on from a background thread, several per send when they arrive
together: `BatchDispatcher`.

`submit(id)` only appends the id to a list; one daemon thread takes everything waiting, up to
`max_batch` ids, and hands it to `send` in one call, so a request or a task never waits for the
send, and a burst costs one send instead of one per id. `linger_seconds` lets a batch fill for a
few milliseconds first (a lone id still goes out after it). Its users: `intake_dispatch` (intake
orders to the workers, in the intake feed), `services.intake_queue` (the API process's `NOTIFY`
of committed intake) and `callback_dispatch` (status changes' callback deliveries).

The database stays the source of truth: an id submitted here belongs to a committed row, and if
the process dies before the thread sent it (or the send fails), a sweeper finds the row and
re-sends it, exactly as for a message lost anywhere else. A failed send is logged and reported,
never raised. At interpreter exit each user flushes its backlog first (`atexit`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import structlog

from jivapay import task_queue

log = structlog.get_logger(__name__)


def task_publisher(single: str, batch: str) -> Callable[[list[int]], None]:
    """A `send` that publishes one Celery message per call: task `single` with the id when there is
    one, task `batch` with the list when there are more (one attempt each: a sweeper re-sends)."""

    def publish(ids: list[int]) -> None:
        if len(ids) == 1:
            task_queue.send_task(single, ids[0], **task_queue.PUBLISH_ONCE)
        else:
            task_queue.send_task(batch, ids, **task_queue.PUBLISH_ONCE)

    return publish


class BatchDispatcher:
    """Sends submitted ids from a background thread, coalescing a backlog into batches."""

    def __init__(
        self,
        send: Callable[[list[int]], None],
        *,
        max_batch: int = 20,
        linger_seconds: float = 0.0,
        name: str = "dispatch",
    ) -> None:
        """`send(ids)` delivers one batch of at most `max_batch` ids."""
        self.send = send
        self.max_batch, self.linger_seconds, self.name = max_batch, linger_seconds, name
        self._reset()

    def _reset(self) -> None:
        # Also after a fork: the child gets the parent's lists but not its thread.
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._waiting: list[int] = []
        self._sending = 0
        self._thread: threading.Thread | None = None

    def submit(self, item_id: int) -> None:
        """Queue `item_id` (a committed row's id) for the next batch."""
        if self._pid != os.getpid():
            self._reset()
        with self._cond:
            self._waiting.append(item_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"jivapay-{self.name}", daemon=True
                )
                self._thread.start()
            # The thread needs waking only to start a batch or to end its linger early: an id
            # added meanwhile is taken with the batch anyway (a wake per id costs CPU under load).
            if len(self._waiting) == 1 or len(self._waiting) >= self.max_batch:
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
        except Exception as exc:  # a sweeper re-sends what the database still holds as due
            log.warning("batch_dispatch_failed", name=self.name, count=len(batch), error=str(exc))
            from jivapay.utils.notifications import report_critical_error

            report_critical_error(exc, f"{self.name} failed", count=len(batch))
