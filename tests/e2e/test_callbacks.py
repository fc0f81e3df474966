"""Merchant callbacks over HTTP: the gateway's list and re-send routes (store credentials, another
store's delivery is 404), and end to end with a real Celery worker: a PayIn completed over HTTP
reaches a local receiver with a valid signature although the receiver was down during the first
attempts (short retry waits through `CALLBACK_RETRY_SCHEDULE_SECONDS`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway.callbacks import router as callbacks_router
from jivapay.database.models import (
    AuditLog,
    CallbackDelivery,
    CallbackDeliveryAttempt,
    IncomingOrder,
)
from jivapay.database.utils import atomic_transaction, read_session
from jivapay.enums import Role
from jivapay.security import create_access_token, generate_callback_secret
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.services.callback_service import deliver_callback
from jivapay.utils.config_loader import set_config_value
from jivapay.worker.app import celery_app
from jivapay.worker.callback_tasks import sweep_due_callbacks
from tests.callback_receiver import (
    Receiver,
    free_port,
    make_world,
    new_delivery,
    verify_standard_webhook,
)
from tests.factories import gateway_headers, make_reference, make_requisite, make_store, make_trader

D = Decimal


# --------------------------------------------------------------------------- list and re-send


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def client(db: Session) -> TestClient:
    return TestClient(build_app(ServerName.GATEWAY, routers=[callbacks_router]))


@pytest.fixture
def broker_queue(redis_url: str, unique: str) -> Iterator[tuple[str, Any]]:
    """Tasks sent during the test go to a queue of its own on the real broker (deleted after)."""
    queue = f"jivapay-test-callbacks-{unique}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    conn = redis.Redis.from_url(celery_app.conf.broker_url)
    try:
        yield queue, conn
    finally:
        celery_app.conf.task_default_queue = previous
        conn.delete(queue, f"_kombu.binding.{queue}")
        conn.close()


def _get(client: TestClient, world: Any, path: str) -> Any:
    return client.get(path, headers=gateway_headers(world.store_world, "GET", path))


def _post(client: TestClient, world: Any, path: str) -> Any:
    return client.post(path, headers=gateway_headers(world.store_world, "POST", path))


def test_list_filters_and_pages_the_stores_deliveries(
    db: Session, client: TestClient, receiver: Receiver
) -> None:
    receiver.script = [(500, {}, b"try later")]
    world = make_world(db, receiver.url)
    other = make_world(db, receiver.url)
    first = new_delivery(db, world, "failed")
    second = new_delivery(db, world, "canceled")
    new_delivery(db, other, "failed")
    deliver_callback(first.id)
    deliver_callback(second.id)

    r = _get(client, world, "/gateway/callbacks?limit=1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["limit"], body["offset"]) == (2, 1, 0)
    assert [d["id"] for d in body["items"]] == [second.id]
    assert body["callbacks_disabled_at"] is None

    r = _get(client, world, "/gateway/callbacks?status=delivered")
    assert [d["id"] for d in r.json()["items"]] == [second.id]
    item = r.json()["items"][0]
    assert item["event_id"] == second.event_id and item["event_type"] == "order.canceled"
    assert item["order_id"] == world.incoming.public_id
    assert [a["status_code"] for a in item["attempts"]] == [200]

    r = _get(
        client, world, f"/gateway/callbacks?order_id={world.incoming.public_id}&status=pending"
    )
    [pending] = r.json()["items"]
    assert pending["id"] == first.id and pending["last_status_code"] == 500
    assert pending["attempts"][0]["response_excerpt"] == "try later"
    assert _get(client, world, "/gateway/callbacks?status=bogus").status_code == 422
    unsigned = client.get("/gateway/callbacks")
    assert unsigned.status_code == 401
    assert unsigned.headers["content-type"].startswith("application/problem+json")


def test_resend_queues_the_delivery_and_reenables_the_store(
    db: Session, client: TestClient, receiver: Receiver, broker_queue: tuple[str, Any]
) -> None:
    queue, conn = broker_queue
    receiver.script = [(410, {}, b"gone")]
    world = make_world(db, receiver.url)
    other = make_world(db, receiver.url)
    delivery = new_delivery(db, world)
    foreign = new_delivery(db, other)
    assert deliver_callback(delivery.id).status == "disabled"
    listed = _get(client, world, "/gateway/callbacks").json()
    assert "410" in listed["callbacks_disabled_reason"]

    r = _post(client, world, f"/gateway/callbacks/{foreign.id}/resend")
    assert r.status_code == 404 and r.json()["code"] == "callback_delivery_not_found"
    assert _post(client, world, "/gateway/callbacks/999999999/resend").status_code == 404

    r = _post(client, world, f"/gateway/callbacks/{delivery.id}/resend")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempt_count"]) == ("pending", 0)
    # The re-send went to the real broker after the request's commit.
    assert conn.llen(queue) == 1
    message = json.loads(conn.lindex(queue, 0))
    assert message["headers"]["task"] == "callbacks.deliver"
    assert _get(client, world, "/gateway/callbacks").json()["callbacks_disabled_at"] is None
    audited = db.scalars(
        select(AuditLog.action)
        .where(AuditLog.ip_address.is_not(None))
        .where(
            (
                (AuditLog.target_entity == "callback_delivery")
                & (AuditLog.target_id == str(delivery.id))
            )
            | (
                (AuditLog.target_entity == "merchant_store")
                & (AuditLog.target_id == str(world.store.id))
            )
        )
        .order_by(AuditLog.id)
    ).all()
    assert audited == ["store.callbacks_enabled", "callback.resent"]

    assert deliver_callback(delivery.id).status == "delivered"
    assert len(receiver.requests) == 2
    assert verify_standard_webhook(
        world.secret, receiver.requests[1].headers, receiver.requests[1].body
    )


# --------------------------------------------------------------------------- end to end with a worker


@pytest.mark.slow
def test_completed_payin_reaches_a_receiver_that_was_down_at_first(
    committed_db: Any, celery_worker: Any
) -> None:
    from jivapay.servers.gateway.server import app as gateway_app
    from jivapay.servers.trader.server import app as trader_app

    down = Receiver(port=free_port())
    secret = generate_callback_secret()
    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("80"))
        world = make_store(session, ref, callback_url=down.url)
        world.store.callback_secret = secret
        trader = make_trader(session, ref, deposit=D("2000"))
        make_requisite(session, trader, ref)
        token = create_access_token(trader.user_id, Role.TRADER)
        fiat = ref.fiat.code
        set_config_value(session, "RATE_LIMIT_DEFAULT", "100000/minute")
        set_config_value(session, "CALLBACK_RETRY_SCHEDULE_SECONDS", [1])
        set_config_value(session, "CALLBACK_MAX_ATTEMPTS", 60)
    celery_worker(concurrency=1)

    def deliveries() -> list[tuple[CallbackDelivery, list[CallbackDeliveryAttempt]]]:
        with read_session() as session:
            rows = session.scalars(select(CallbackDelivery).order_by(CallbackDelivery.id)).all()
            return [
                (
                    d,
                    list(
                        session.scalars(
                            select(CallbackDeliveryAttempt)
                            .filter_by(delivery_id=d.id)
                            .order_by(CallbackDeliveryAttempt.id)
                        )
                    ),
                )
                for d in rows
            ]

    def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            # Beat's part, run here: the worker sends the tasks it enqueues itself (the delivery
            # of its assignment) to the default queue, which the test worker does not consume.
            sweep_due_callbacks()
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}: {deliveries()}")

    try:
        with TestClient(gateway_app) as gateway, TestClient(trader_app) as trader_api:
            path = "/gateway/payin/init"
            body = json.dumps(
                {
                    "merchant_order_id": f"cb-{uuid.uuid4().hex[:6]}",
                    "amount_fiat": "800.00",
                    "fiat_currency": fiat,
                }
            ).encode()
            headers = gateway_headers(world, "POST", path, body, idempotency_key="k-cb-1")
            r = gateway.post(path, content=body, headers=headers)
            assert r.status_code == 201, r.text
            order_id = r.json()["order_id"]
            wait_for(lambda: len(deliveries()) == 1, "the assignment's delivery")
            assert gateway.post(f"/gateway/payin/confirm/{order_id}").json()["status"] == "paid"
            r = trader_api.post(
                f"/trader/orders/{order_id}/confirm", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200 and r.json()["status"] == "completed", r.text

            # The receiver is down: the worker keeps retrying every ~1 s.
            def completed_failed_twice() -> bool:
                found = [a for d, a in deliveries() if d.event_type == "order.completed"]
                return bool(found) and len(found[0]) >= 2

            wait_for(completed_failed_twice, "two failed attempts of order.completed")
            assert down.requests == []
            down.start()
            wait_for(
                lambda: all(d.status == "delivered" for d, _ in deliveries()),
                "every delivery delivered",
            )
    finally:
        down.stop()

    final = deliveries()
    assert [d.event_type for d, _ in final] == ["order.pending", "order.paid", "order.completed"]
    completed, tries = final[-1]
    assert completed.attempt_count == len(tries) >= 3
    assert [a.status_code for a in tries[:-1]] == [None] * (len(tries) - 1)
    assert all("ConnectError" in (a.error or "") for a in tries[:-1])
    assert tries[-1].status_code == 200
    received = [r for r in down.requests if r.headers["webhook-id"] == completed.event_id]
    assert len(received) == 1
    assert verify_standard_webhook(secret, received[0].headers, received[0].body)
    payload = json.loads(received[0].body)
    assert payload["type"] == "order.completed"
    assert payload["data"]["order_id"] == order_id
    assert payload["data"]["status"] == "completed"
    assert payload["data"]["amount_fiat"] == "800.00"
    assert payload["data"]["completed_at"] is not None
    with read_session() as session:
        incoming = session.scalars(select(IncomingOrder).filter_by(public_id=order_id)).one()
        assert incoming.store_id == world.store.id
    assert datetime.fromisoformat(payload["created_at"]) <= datetime.now(UTC)
