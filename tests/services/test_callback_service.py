"""Merchant callbacks against a real local HTTP receiver (http.server on 127.0.0.1 in a thread):
signature (checked by an independent Standard Webhooks implementation in tests/callback_receiver.py), retries and their
schedule, Retry-After, 410, redirects, refused private addresses, attempt rows, the sweeper's query,
concurrent attempts, secret rotation, and `jivapay verify-callback`.

Attempts are driven by calling `deliver_callback(id, now=...)` with the clock moved to the next due
time, so no test waits for a retry delay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from jivapay.config import get_settings
from jivapay.database.models import (
    CallbackDelivery,
    CallbackDeliveryAttempt,
    ConfigurationSetting,
    MerchantStore,
)
from jivapay.database.utils import atomic_transaction
from jivapay.enums import CallbackStatus
from jivapay.security import generate_callback_secret
from jivapay.services import callback_sender, callback_service, webhook_signing
from jivapay.services.callback_sender import SendResult
from jivapay.services.callback_service import deliver_callback
from jivapay.utils import config_loader
from jivapay.utils.config_loader import set_config_value
from jivapay.utils.exceptions import ValidationFailed
from tests.callback_receiver import (
    Receiver,
    free_port,
    make_world,
    new_delivery,
    verify_standard_webhook,
)

# --------------------------------------------------------------------------- builders


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def reload(db: Session, delivery: CallbackDelivery) -> CallbackDelivery:
    db.expire_all()
    row = db.get(CallbackDelivery, delivery.id)
    assert row is not None
    return row


def attempts(db: Session, delivery: CallbackDelivery) -> list[CallbackDeliveryAttempt]:
    stmt = select(CallbackDeliveryAttempt).filter_by(delivery_id=delivery.id)
    return list(db.scalars(stmt.order_by(CallbackDeliveryAttempt.id)))


def due(delivery: CallbackDelivery) -> datetime:
    assert delivery.next_attempt_at is not None
    return delivery.next_attempt_at


# --------------------------------------------------------------------------- delivery


def test_delivered_on_200_with_valid_signature_and_exact_payload(
    db: Session, receiver: Receiver
) -> None:
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    assert delivery.status == "pending"

    outcome = deliver_callback(delivery.id)

    assert (outcome.status, outcome.attempt, outcome.status_code) == ("delivered", 1, 200)
    [req] = receiver.requests
    assert req.path == "/hooks/jivapay"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("JivaPay")
    assert req.headers["webhook-id"] == delivery.event_id
    assert abs(int(req.headers["webhook-timestamp"]) - time.time()) < 60
    assert verify_standard_webhook(world.secret, req.headers, req.body)
    assert not verify_standard_webhook(generate_callback_secret(), req.headers, req.body)
    sent = json.loads(req.body)
    assert sent == delivery.payload
    assert sent["id"] == delivery.event_id and sent["type"] == "order.failed"
    assert sent["data"]["order_id"] == world.incoming.public_id
    assert sent["data"]["amount_fiat"] == "1500.00"

    row = reload(db, delivery)
    assert (row.status, row.attempt_count, row.last_status_code) == ("delivered", 1, 200)
    assert row.delivered_at is not None and row.next_attempt_at is None
    [attempt] = attempts(db, delivery)
    assert (attempt.status_code, attempt.error, attempt.response_excerpt) == (200, None, "ok")
    assert attempt.duration_ms is not None and attempt.duration_ms >= 0
    # Delivered is final: a duplicate message sends nothing.
    assert deliver_callback(delivery.id).status == "delivered"
    assert len(receiver.requests) == 1


def test_500_then_200_is_delivered_with_two_attempt_rows(db: Session, receiver: Receiver) -> None:
    receiver.script = [(500, {}, b"boom" * 400)]
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    start = due(delivery)

    first = deliver_callback(delivery.id, now=start)
    assert (first.status, first.status_code, first.error) == ("pending", 500, "HTTP 500")
    wait = (due(reload(db, delivery)) - start).total_seconds()
    assert 5 * 0.85 <= wait <= 5 * 1.15  # the first step of the schedule, jittered
    # Not due yet: a message arriving early sends nothing.
    assert deliver_callback(delivery.id, now=start + timedelta(seconds=1)).status == "skipped"
    assert len(receiver.requests) == 1

    second = deliver_callback(delivery.id, now=due(reload(db, delivery)))
    assert second.status == "delivered"
    assert len(receiver.requests) == 2
    assert receiver.requests[0].body == receiver.requests[1].body
    rows = attempts(db, delivery)
    assert [a.status_code for a in rows] == [500, 200]
    assert rows[0].error is None and len(rows[0].response_excerpt or "") == 1024
    assert reload(db, delivery).attempt_count == 2


def test_receiver_down_then_up_is_delivered_with_attempts_recorded(db: Session) -> None:
    down = Receiver(port=free_port())
    world = make_world(db, down.url)
    delivery = new_delivery(db, world)
    now = due(delivery)
    waits = []
    for _ in range(2):
        outcome = deliver_callback(delivery.id, now=now)
        assert outcome.status == "pending" and outcome.status_code is None
        assert outcome.error and "ConnectError" in outcome.error
        waits.append((due(reload(db, delivery)) - now).total_seconds())
        now = due(reload(db, delivery))
    assert 4 <= waits[0] <= 6 and 25 <= waits[1] <= 35  # 5 s then 30 s, jittered

    down.start()
    try:
        assert deliver_callback(delivery.id, now=now).status == "delivered"
    finally:
        down.stop()
    assert len(down.requests) == 1
    assert verify_standard_webhook(world.secret, down.requests[0].headers, down.requests[0].body)
    rows = attempts(db, delivery)
    assert [a.status_code for a in rows] == [None, None, 200]
    assert all("ConnectError" in (a.error or "") for a in rows[:2])


def test_retry_after_is_honoured(db: Session, receiver: Receiver) -> None:
    receiver.script = [
        (503, {"Retry-After": "3600"}, b"later"),
        (429, {"Retry-After": "999999"}, b"much later"),
    ]
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    now = due(delivery)
    deliver_callback(delivery.id, now=now)
    assert (due(reload(db, delivery)) - now).total_seconds() == pytest.approx(3600)
    now = due(reload(db, delivery))
    deliver_callback(delivery.id, now=now)
    assert (due(reload(db, delivery)) - now).total_seconds() == pytest.approx(86400)  # capped

    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert callback_service.parse_retry_after("120", now=at) == 120
    assert callback_service.parse_retry_after("Tue, 01 Jan 2030 00:10:00 GMT", now=at) == 600
    assert callback_service.parse_retry_after("soon", now=at) is None
    # A short Retry-After never shortens the schedule.
    delay = callback_service.next_retry_delay(
        2, schedule=callback_service.DEFAULT_RETRY_SCHEDULE_SECONDS, retry_after=1
    )
    assert 30 * 0.85 <= delay <= 30 * 1.15


def test_410_disables_the_store_and_later_deliveries_are_not_sent(
    db: Session, receiver: Receiver
) -> None:
    receiver.script = [(410, {}, b"gone")]
    world = make_world(db, receiver.url)
    first = new_delivery(db, world, "failed")
    queued = new_delivery(db, world, "canceled")

    outcome = deliver_callback(first.id)

    assert outcome.status == "disabled"
    db.expire_all()
    store = db.get(MerchantStore, world.store.id)
    assert store is not None and store.callbacks_disabled_at is not None
    assert "410" in (store.callbacks_disabled_reason or "")
    assert reload(db, queued).status == "disabled"
    later = new_delivery(db, world, "expired")
    assert later.status == "disabled" and later.next_attempt_at is None
    assert deliver_callback(queued.id).status == "disabled"
    assert deliver_callback(later.id).status == "disabled"
    assert len(receiver.requests) == 1
    page = callback_service.list_deliveries(db, store_id=world.store.id, limit=10, offset=0)
    assert page.callbacks_disabled_reason == store.callbacks_disabled_reason


def test_a_delivery_due_after_the_store_was_disabled_is_not_sent(
    db: Session, receiver: Receiver
) -> None:
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    world.store.callbacks_disabled_at = datetime.now(UTC)
    db.flush()
    assert deliver_callback(delivery.id).status == "disabled"
    assert receiver.requests == []


def test_redirect_is_not_followed_and_counts_as_failure(db: Session, receiver: Receiver) -> None:
    receiver.script = [(302, {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}, b"")]
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    outcome = deliver_callback(delivery.id)
    assert outcome.status == "pending" and outcome.status_code == 302
    assert outcome.error and "redirect not followed" in outcome.error
    assert [r.path for r in receiver.requests] == ["/hooks/jivapay"]
    assert attempts(db, delivery)[0].status_code == 302


@pytest.mark.parametrize(("host", "kind"), [("127.0.0.1", "loopback"), ("10.0.0.1", "private")])
def test_private_address_is_refused_before_connecting(
    db: Session, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, host: str, kind: str
) -> None:
    monkeypatch.setattr(get_settings(), "CALLBACK_ALLOW_PRIVATE_NETWORKS", False)
    world = make_world(db, f"http://{host}:{receiver.port}/hooks/jivapay")
    delivery = new_delivery(db, world)

    outcome = deliver_callback(delivery.id)

    assert outcome.status == "pending" and outcome.status_code is None
    assert outcome.error and "refused" in outcome.error and kind in outcome.error
    assert receiver.requests == []
    [attempt] = attempts(db, delivery)
    assert attempt.status_code is None and "CALLBACK_ALLOW_PRIVATE_NETWORKS" in (
        attempt.error or ""
    )


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 addresses reach the IPv4 address inside
        ("2002:a9fe:a9fe::1", "link-local"),
        ("2002:a00:1::1", "private"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
        ("2002:5db8:d822::1", None),
    ],
)
def test_address_classification(address: str, refused: str | None) -> None:
    # Only classifies: no connection is made to any of these addresses.
    assert callback_sender._refusal(address) == refused


@pytest.fixture
def trickling_port() -> Iterator[int]:
    """A receiver that answers a status line, then one header byte every 0.2 s for 6 s: each read
    is quick, the answer never ends within a callback's timeout."""
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            ends = time.monotonic() + 6
            while not stop.is_set() and time.monotonic() < ends:
                conn.sendall(b"a")
                time.sleep(0.2)
            conn.sendall(b"\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=10)
    server.close()


def test_the_timeout_bounds_the_whole_attempt_not_each_read(trickling_port: int) -> None:
    started = time.monotonic()
    result = callback_sender.send(
        f"http://127.0.0.1:{trickling_port}/hook",
        body=b"{}",
        headers={},
        timeout=1.0,
        allow_private=True,
    )
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5, elapsed
    assert not result.delivered
    assert result.error is not None and result.error.startswith("timed out after 1 s")


def test_malformed_url_fails_at_once(db: Session, receiver: Receiver) -> None:
    world = make_world(db, "ftp://127.0.0.1/hook")
    delivery = new_delivery(db, world)
    outcome = deliver_callback(delivery.id)
    assert outcome.status == "failed" and "http or https" in (outcome.error or "")
    assert receiver.requests == []


def test_attempts_run_out_and_the_delivery_fails(db: Session, receiver: Receiver) -> None:
    receiver.default = (500, {}, b"down")
    set_config_value(db, "CALLBACK_MAX_ATTEMPTS", 3)
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    now = due(delivery)
    statuses = []
    for _ in range(3):
        statuses.append(deliver_callback(delivery.id, now=now).status)
        now = reload(db, delivery).next_attempt_at or now
    assert statuses == ["pending", "pending", "failed"]
    assert reload(db, delivery).next_attempt_at is None
    assert len(attempts(db, delivery)) == 3 and len(receiver.requests) == 3


def test_schedule_setting_overrides_the_default(db: Session, receiver: Receiver) -> None:
    set_config_value(db, "CALLBACK_RETRY_SCHEDULE_SECONDS", [100, 200])
    assert callback_service.retry_schedule(db) == (100.0, 200.0)
    receiver.default = (500, {}, b"")
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    now = due(delivery)
    waits = []
    for _ in range(3):
        deliver_callback(delivery.id, now=now)
        nxt = due(reload(db, delivery))
        waits.append((nxt - now).total_seconds())
        now = nxt
    assert 85 <= waits[0] <= 115 and 170 <= waits[1] <= 230 and 170 <= waits[2] <= 230
    # Refused when set; stored around the check (an older row), the reader falls back.
    with pytest.raises(ValidationFailed):
        set_config_value(db, "CALLBACK_RETRY_SCHEDULE_SECONDS", [0, -1])
    for stored in ("[0, -1]", json.dumps([10**400])):
        db.execute(
            update(ConfigurationSetting)
            .where(ConfigurationSetting.key == "CALLBACK_RETRY_SCHEDULE_SECONDS")
            .values(value=stored)
        )
        config_loader.invalidate_cache()
        assert (
            callback_service.retry_schedule(db) == callback_service.DEFAULT_RETRY_SCHEDULE_SECONDS
        )


def test_claim_leases_the_delivery_and_the_sweeper_finds_only_due_ones(
    db: Session, receiver: Receiver
) -> None:
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    now = due(delivery)
    assert delivery.id in callback_service.due_delivery_ids(db, now=now)
    with atomic_transaction() as session:
        claimed = callback_service.claim_delivery(
            session, delivery_id=delivery.id, now=now, lease_seconds=40
        )
    assert isinstance(claimed, callback_service.ClaimedDelivery) and claimed.attempt == 1
    # In flight: neither a duplicate message nor the sweeper starts a second attempt.
    assert deliver_callback(delivery.id, now=now).status == "skipped"
    assert delivery.id not in callback_service.due_delivery_ids(db, now=now)
    # The worker died: once the lease runs out the sweeper sends it again.
    later = now + timedelta(seconds=41)
    assert delivery.id in callback_service.due_delivery_ids(db, now=later)
    assert deliver_callback(delivery.id, now=later).status == "delivered"
    assert reload(db, delivery).attempt_count == 2 and len(receiver.requests) == 1


def test_a_delivered_delivery_is_not_overwritten_by_a_late_failed_attempt(
    db: Session, receiver: Receiver
) -> None:
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    now = due(delivery)
    with atomic_transaction() as session:
        claimed = callback_service.claim_delivery(
            session, delivery_id=delivery.id, now=now, lease_seconds=40
        )
    assert isinstance(claimed, callback_service.ClaimedDelivery)
    # Meanwhile another attempt (after a re-send) delivered it.
    assert deliver_callback(delivery.id, now=now + timedelta(seconds=41)).status == "delivered"
    with atomic_transaction() as session:
        outcome = callback_service.record_attempt(
            session,
            claimed=claimed,
            result=SendResult(status_code=500, duration_ms=12),
            attempted_at=now,
            now=now,
        )
    assert outcome.status == "delivered"
    row = reload(db, delivery)
    assert (row.status, row.last_status_code) == ("delivered", 200)
    assert sorted(a.status_code or 0 for a in attempts(db, delivery)) == [200, 500]


def test_rotated_secret_signs_the_next_attempt(db: Session, receiver: Receiver) -> None:
    world = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    new_secret = callback_service.rotate_callback_secret(db, store_id=world.store.id)
    db.flush()
    assert new_secret.startswith("whsec_") and new_secret != world.secret
    assert deliver_callback(delivery.id).status == "delivered"
    [req] = receiver.requests
    assert verify_standard_webhook(new_secret, req.headers, req.body)
    assert not verify_standard_webhook(world.secret, req.headers, req.body)


def test_list_and_resend_services(db: Session, receiver: Receiver) -> None:
    receiver.script = [(500, {}, b"no")]
    world = make_world(db, receiver.url)
    other = make_world(db, receiver.url)
    a = new_delivery(db, world, "failed")
    b = new_delivery(db, world, "canceled")
    foreign = new_delivery(db, other, "failed")
    deliver_callback(a.id)

    page = callback_service.list_deliveries(db, store_id=world.store.id, limit=1, offset=0)
    assert (page.total, len(page.items), page.items[0].id) == (2, 1, b.id)
    pending = callback_service.list_deliveries(
        db, store_id=world.store.id, status=CallbackStatus.PENDING, limit=10, offset=0
    )
    assert {d.id for d in pending.items} == {a.id, b.id}
    by_order = callback_service.list_deliveries(
        db, store_id=world.store.id, order_public_id=world.incoming.public_id, limit=10, offset=0
    )
    [with_attempt] = [d for d in by_order.items if d.id == a.id]
    assert [x.status_code for x in with_attempt.attempts] == [500]
    assert (
        callback_service.list_deliveries(
            db, store_id=world.store.id, order_public_id="ord_nope", limit=10, offset=0
        ).total
        == 0
    )

    from jivapay.utils.exceptions import NotFound

    with pytest.raises(NotFound):
        callback_service.resend_delivery(db, store_id=world.store.id, delivery_id=foreign.id)
    assert deliver_callback(a.id, now=due(reload(db, a))).status == "delivered"
    view = callback_service.resend_delivery(db, store_id=world.store.id, delivery_id=a.id)
    assert (view.status, view.attempt_count, view.delivered_at) == ("pending", 0, None)
    db.flush()
    assert deliver_callback(a.id).status == "delivered"
    assert len([r for r in receiver.requests if json.loads(r.body)["id"] == a.event_id]) == 3


# --------------------------------------------------------------------------- signing and the CLI


def test_signing_matches_the_specification() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"a":1}'
    sig = webhook_signing.sign(secret, msg_id="msg_1", timestamp=1700000000, body=body)
    expected = hmac.new(b"k" * 32, b'msg_1.1700000000.{"a":1}', hashlib.sha256).digest()
    assert sig == "v1," + base64.b64encode(expected).decode()
    kwargs: dict[str, Any] = {"msg_id": "msg_1", "timestamp": "1700000000", "body": body}
    webhook_signing.verify(secret, signature=f"v1,bogus {sig}", now=1700000100, **kwargs)
    with pytest.raises(webhook_signing.WebhookVerificationError, match="away from now"):
        webhook_signing.verify(secret, signature=sig, now=1700000301, **kwargs)
    with pytest.raises(webhook_signing.WebhookVerificationError, match="no signature"):
        webhook_signing.verify(
            secret, signature=sig, msg_id="msg_1", timestamp="1700000000", body=b"{}", now=1.7e9
        )
    with pytest.raises(webhook_signing.WebhookVerificationError, match="whsec_"):
        webhook_signing.secret_key("whsec_***")


def test_verify_callback_command(tmp_path: Path) -> None:
    from jivapay.cli import app

    secret = generate_callback_secret()
    body = b'{"id":"evt_1","type":"order.completed"}'
    ts = str(int(time.time()))
    sig = webhook_signing.sign(secret, msg_id="evt_1", timestamp=ts, body=body)
    (tmp_path / "body.json").write_bytes(body)
    args = ["verify-callback", "--secret", secret, "--id", "evt_1", "--timestamp", ts]
    runner = CliRunner()
    ok = runner.invoke(app, [*args, "--signature", sig, "--body-file", str(tmp_path / "body.json")])
    assert ok.exit_code == 0 and "valid" in ok.output
    from_stdin = runner.invoke(app, [*args, "--signature", sig], input=body)
    assert from_stdin.exit_code == 0
    bad = runner.invoke(app, [*args, "--signature", sig], input=body + b" ")
    assert bad.exit_code == 1 and "invalid" in bad.output


def test_beat_sweeps_due_callbacks_and_the_tasks_are_registered() -> None:
    import jivapay.worker.callback_tasks  # noqa: F401 - what the worker imports from TASK_MODULES
    from jivapay.worker.app import TASK_MODULES, celery_app
    from jivapay.worker.scheduler import BEAT_SCHEDULE

    assert "jivapay.worker.callback_tasks" in TASK_MODULES

    entry = BEAT_SCHEDULE["callbacks-sweep-due"]
    assert entry["task"] == "callbacks.sweep_due" and entry["schedule"] == 15.0
    assert {"callbacks.deliver", "callbacks.sweep_due"} <= set(celery_app.tasks)
