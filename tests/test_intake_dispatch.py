"""`intake_dispatch`: committed intake orders reach the broker from a background thread, one
message for one order, one `orders.process_batch` message for a backlog, every id exactly once
and in intake order; a failed publish is reported and does not stop the next one."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jivapay import task_names, task_queue
from jivapay.batch_dispatch import BatchDispatcher
from jivapay.intake_dispatch import publish_tasks

Sent = list[tuple[str, Any]]


def test_a_lone_order_goes_out_at_once_on_its_own_message(sent: Sent) -> None:
    dispatcher = BatchDispatcher(publish_tasks)
    dispatcher.submit(41)
    assert dispatcher.flush(5)
    assert sent == [(task_names.ORDERS_PROCESS, 41)]


def test_with_a_linger_orders_heard_together_share_a_message_and_a_full_batch_does_not_wait(
    sent: Sent,
) -> None:
    dispatcher = BatchDispatcher(publish_tasks, max_batch=4, linger_seconds=0.5)
    for incoming_id in (1, 2, 3):  # within the linger: one message
        dispatcher.submit(incoming_id)
    assert dispatcher.flush(5)
    assert sent == [(task_names.ORDERS_PROCESS_BATCH, [1, 2, 3])]
    sent.clear()
    started = time.monotonic()
    for incoming_id in (4, 5, 6, 7):  # a full batch goes out without lingering
        dispatcher.submit(incoming_id)
    assert dispatcher.flush(5)
    assert time.monotonic() - started < 0.4
    assert sent == [(task_names.ORDERS_PROCESS_BATCH, [4, 5, 6, 7])]


def test_a_backlog_goes_out_in_batches_of_at_most_max_batch(
    sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, started = threading.Event(), threading.Event()
    capture = task_queue.send_task

    def slow_broker(name: str, *args: Any, **options: Any) -> None:
        started.set()
        assert release.wait(5)
        capture(name, *args, **options)

    monkeypatch.setattr(task_queue, "send_task", slow_broker)
    dispatcher = BatchDispatcher(publish_tasks, max_batch=20)
    dispatcher.submit(0)
    assert started.wait(5)  # the thread is inside the first publish: the rest wait behind it
    for incoming_id in range(1, 46):
        dispatcher.submit(incoming_id)
    assert not dispatcher.flush(0.05)
    release.set()
    assert dispatcher.flush(5)

    assert [name for name, _ in sent] == [task_names.ORDERS_PROCESS] + [
        task_names.ORDERS_PROCESS_BATCH
    ] * 3
    assert [len(ids) for _, ids in sent[1:]] == [20, 20, 5]
    assert [sent[0][1]] + [i for _, ids in sent[1:] for i in ids] == list(range(46))


def test_a_failed_publish_is_reported_and_the_next_one_goes_out(
    sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = task_queue.send_task
    reported: list[str] = []
    calls = iter([ConnectionError("broker down"), None])

    def flaky(name: str, *args: Any, **options: Any) -> None:
        error = next(calls)
        if error:
            raise error
        capture(name, *args, **options)

    monkeypatch.setattr(task_queue, "send_task", flaky)
    monkeypatch.setattr(
        "jivapay.utils.notifications.report_critical_error",
        lambda exc, message, **context: reported.append(f"{message}: {exc}"),
    )
    dispatcher = BatchDispatcher(publish_tasks, name="intake-dispatch")
    dispatcher.submit(1)
    assert dispatcher.flush(5)
    dispatcher.submit(2)
    assert dispatcher.flush(5)
    assert reported == ["intake-dispatch failed: broker down"]
    assert sent == [(task_names.ORDERS_PROCESS, 2)]  # order 1 is left to the sweeper


def test_a_forked_process_starts_its_own_thread(sent: Sent) -> None:
    dispatcher = BatchDispatcher(publish_tasks)
    dispatcher.submit(1)
    assert dispatcher.flush(5)
    parent_thread = dispatcher._thread
    dispatcher._pid = -1  # as seen from a child of a fork: the parent's thread is not there
    dispatcher.submit(2)
    assert dispatcher.flush(5)
    assert dispatcher._thread is not parent_thread and dispatcher._thread is not None
    assert sent == [(task_names.ORDERS_PROCESS, 1), (task_names.ORDERS_PROCESS, 2)]


def test_what_is_waiting_at_exit_is_published_before_the_process_ends(tmp_path: Path) -> None:
    out = tmp_path / "sent.txt"
    script = f"""
import json
import time
from jivapay import intake_dispatch, task_queue

def slow_broker(name, *args, **options):
    time.sleep(0.3)
    with open({str(out)!r}, "a") as f:
        f.write(f"{{name}} {{json.dumps(args[0])}}\\n")

task_queue.send_task = slow_broker
intake_dispatch.dispatcher.submit(1)
intake_dispatch.dispatcher.submit(2)
"""  # the interpreter exits while the first publish is still running
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    ids: list[int] = []
    for line in out.read_text().splitlines():
        name, arg = line.split(" ", 1)
        sent = json.loads(arg)
        assert (name == task_names.ORDERS_PROCESS_BATCH) == isinstance(sent, list)
        ids += sent if isinstance(sent, list) else [sent]
    assert ids == [1, 2]
