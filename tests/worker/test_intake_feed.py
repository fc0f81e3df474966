"""`jivapay intake-feed`: committed intake orders reach the broker through PostgreSQL `NOTIFY`, only
committed ones, and none is lost when the feed connects late or loses its connection.

The feed runs here as `worker.intake_feed.run` in a thread (the command's own loop) against the
real PostgreSQL, with the gateway app committing real intakes; only the last step, the broker's
`send_task`, is replaced by a list. The command itself runs as a process in the last test, and in
every end-to-end test with a Celery worker (`celery_worker` starts it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from jivapay import task_queue
from jivapay.batch_dispatch import BatchDispatcher
from jivapay.database.base import utcnow
from jivapay.database.models import IncomingOrder
from jivapay.database.utils import atomic_transaction, read_session
from jivapay.intake_dispatch import publish_tasks
from jivapay.services import intake_queue
from jivapay.worker import intake_feed
from tests.factories import StoreWorld, gateway_headers, make_reference, make_store

D = Decimal
PAYIN = "/gateway/payin/init"
BARRIER = 0  # no order has id 0: a committed announcement of it marks "everything before is in"


@dataclass
class Feed:
    """A running feed and what it published."""

    sent: list[int] = field(default_factory=list)
    listening: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self, retry_seconds: float = 0.2) -> None:
        self.thread = threading.Thread(
            target=intake_feed.run,
            args=(self.stop, BatchDispatcher(publish_tasks)),
            kwargs={
                "poll_seconds": 0.2,
                "retry_seconds": retry_seconds,
                "listening": self.listening,
            },
            daemon=True,
        )
        self.thread.start()
        assert self.listening.wait(15), "the feed did not start listening"

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"{what}; published so far: {self.sent}"
            time.sleep(0.05)

    def drained(self) -> list[int]:
        """Everything published before a barrier committed now (notifications arrive in commit
        order), the barrier left out."""
        with atomic_transaction() as session:
            intake_queue.announce(session, BARRIER)
        self.wait_for(lambda: BARRIER in self.sent, "the barrier did not arrive")
        got = [i for i in self.sent if i != BARRIER]
        self.sent.clear()
        return got


@pytest.fixture
def feed(committed_db, monkeypatch: pytest.MonkeyPatch) -> Iterator[Feed]:  # type: ignore[no-untyped-def]
    running = Feed()

    def capture(name: str, *args: Any, **_: Any) -> None:
        ids = args[0] if name == "orders.process_batch" else [args[0]]
        running.sent.extend(ids)

    monkeypatch.setattr(task_queue, "send_task", capture)
    yield running
    running.stop.set()
    if running.thread is not None:
        running.thread.join(10)
        assert not running.thread.is_alive(), "the feed did not stop"


@dataclass(frozen=True)
class Store:
    world: StoreWorld
    fiat: str


@pytest.fixture
def store(committed_db) -> Store:  # type: ignore[no-untyped-def]
    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("80"))
        world = make_store(session, ref, payin_percent=D("4"), balance=D("1000"))
        return Store(world, ref.fiat.code)


@pytest.fixture
def gateway() -> Iterator[TestClient]:
    from jivapay.servers.gateway.server import app

    with TestClient(app) as client:
        yield client


def _payin(gateway: TestClient, store: Store, amount: str = "4000.00") -> Any:
    body = json.dumps(
        {
            "merchant_order_id": f"feed-{uuid.uuid4().hex[:12]}",
            "amount_fiat": amount,
            "fiat_currency": store.fiat,
        }
    ).encode()
    key = uuid.uuid4().hex
    headers = gateway_headers(store.world, "POST", PAYIN, body, idempotency_key=key)
    answer = gateway.post(PAYIN, content=body, headers=headers)
    # The announcer's thread sends the NOTIFY after the commit: wait for it, so that each test
    # knows whether a feed was listening when it went out.
    assert intake_queue.announcer.flush()
    return answer


def _incoming_id(answer: Any) -> int:
    assert answer.status_code == 201, answer.text
    with read_session() as session:
        return session.scalars(
            select(IncomingOrder.id).where(IncomingOrder.public_id == answer.json()["order_id"])
        ).one()


def test_committed_orders_are_published_and_refused_or_rolled_back_ones_are_not(
    feed: Feed, store: Store, gateway: TestClient
) -> None:
    feed.start()
    first = _incoming_id(_payin(gateway, store))
    refused = _payin(gateway, store, amount="1.00")  # under the store's lower limit
    assert refused.status_code == 422
    with pytest.raises(RuntimeError), atomic_transaction() as session:
        intake_queue.announce(session, 424242)
        raise RuntimeError("the transaction rolls back")
    with atomic_transaction() as session:  # not an id: ignored, the feed keeps listening
        session.execute(
            text("SELECT pg_notify(:channel, 'hello')"), {"channel": intake_queue.CHANNEL}
        )
    second = _incoming_id(_payin(gateway, store))
    assert feed.drained() == [first, second]
    assert feed.listening.is_set()


def test_the_notify_is_sent_after_the_commit_never_inside_the_intake_transaction(
    feed: Feed, store: Store, gateway: TestClient
) -> None:
    """A transaction that has issued NOTIFY takes a database-wide lock through its commit, so a
    NOTIFY inside the intake transaction would make every intake commit one after the other
    (`intake_queue`): the announcement goes out on its own autocommit statement."""
    from sqlalchemy import event

    from jivapay.database.engine import get_engine

    notifies: list[bool] = []  # for each pg_notify statement: was it outside any transaction?

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "pg_notify" in statement:
            notifies.append(conn.connection.dbapi_connection.autocommit)

    feed.start()
    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        incoming = _incoming_id(_payin(gateway, store))
        intake_queue.announcer.flush()
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    assert notifies == [True]
    assert feed.drained() == [incoming]


def test_the_announcer_keeps_its_connection_and_replaces_a_lost_one(
    feed: Feed, store: Store, gateway: TestClient
) -> None:
    """The announcer sends every `NOTIFY` on one connection it keeps; when that connection dies
    (PostgreSQL restarted, the backend killed) the next send goes out on a new one, not to the
    sweeper."""

    def announcer_pid() -> int:
        conn = intake_queue.notify._conn
        assert conn is not None
        return int(conn.connection.dbapi_connection.info.backend_pid)

    feed.start()
    first = _incoming_id(_payin(gateway, store))
    intake_queue.announcer.flush()
    pid = announcer_pid()
    second = _incoming_id(_payin(gateway, store))
    intake_queue.announcer.flush()
    assert announcer_pid() == pid  # kept, not checked out again
    with read_session() as session:
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    third = _incoming_id(_payin(gateway, store))
    intake_queue.announcer.flush()
    assert announcer_pid() != pid
    assert feed.drained() == [first, second, third]


def test_one_notification_may_carry_several_ids(feed: Feed) -> None:
    """The announcer sends the ids committed together in one NOTIFY, comma-separated."""
    feed.start()
    with read_session() as session:
        session.execute(
            text("SELECT pg_notify(:channel, '101,102,103')"), {"channel": intake_queue.CHANNEL}
        )
        session.commit()
    assert feed.drained() == [101, 102, 103]
    assert intake_queue.parse("7,x") is None
    assert intake_queue.parse("") is None


def test_a_release_from_manual_review_is_announced_on_commit(
    feed: Feed, store: Store, gateway: TestClient
) -> None:
    from jivapay.enums import IncomingOrderStatus
    from jivapay.services.manual_review import release_for_processing
    from jivapay.services.order_status_manager import SYSTEM

    incoming = _incoming_id(_payin(gateway, store))
    with atomic_transaction() as session:
        session.execute(
            update(IncomingOrder)
            .where(IncomingOrder.id == incoming)
            .values(status=IncomingOrderStatus.MANUAL_REVIEW.value)
        )
    feed.start()
    assert feed.drained() == []  # held for review: not `new`, so not caught up either
    with atomic_transaction() as session:
        release_for_processing(session, incoming_order_id=incoming, actor=SYSTEM)
    assert feed.drained() == [incoming]


def test_a_feed_that_starts_late_hands_over_the_recent_new_orders_only(
    feed: Feed, store: Store, gateway: TestClient
) -> None:
    recent = _incoming_id(_payin(gateway, store))
    old = _incoming_id(_payin(gateway, store))
    with atomic_transaction() as session:  # older than STUCK_ORDER_SECONDS: the sweeper's
        session.execute(
            update(IncomingOrder)
            .where(IncomingOrder.id == old)
            .values(next_attempt_at=utcnow() - timedelta(hours=1))
        )
    feed.start()
    assert feed.drained() == [recent]


def test_the_feed_reconnects_and_catches_up_what_it_missed_while_cut_off(
    feed: Feed, store: Store, gateway: TestClient
) -> None:
    feed.start(retry_seconds=1.0)

    def listener_pids() -> list[int]:
        with read_session() as session:
            return list(
                session.scalars(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = :name"
                    ),
                    {"name": intake_feed.APPLICATION_NAME},
                )
            )

    pids = listener_pids()
    assert len(pids) == 1, pids
    with read_session() as session:
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
    feed.wait_for(lambda: not feed.listening.is_set(), "the feed did not notice the cut")
    missed = _incoming_id(_payin(gateway, store))  # committed while nobody listens
    feed.wait_for(feed.listening.is_set, "the feed did not reconnect")
    assert listener_pids() not in ([], pids)
    assert feed.drained() == [missed]


def test_the_command_listens_and_stops_on_sigterm(committed_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "intake-feed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jivapay.cli", "intake-feed", "--poll", "0.2"],
            env={**os.environ, "LOG_LEVEL": "INFO"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "intake_feed_listening" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
