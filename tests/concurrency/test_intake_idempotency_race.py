"""The same intake sent several times at once with one `Idempotency-Key` (a store's retry racing
its first try), on real parallel requests, each with its own PostgreSQL session: exactly one order
is created; every other answer is that order replayed or 409 `idempotency_key_in_progress`, never
a second order, a 409 for the merchant order id, or a 5xx.

The gateway's intake takes the key's lock in the statement that authenticates the store and reads
the key's row in a later one (`idempotency.store_key_lock`): a request that gets the lock after the
first one committed must see its row and replay it."""

from __future__ import annotations

import json
import threading
import uuid
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jivapay.database.models import IdempotencyKey, IncomingOrder
from jivapay.database.utils import atomic_transaction, read_session
from tests.factories import gateway_headers, make_reference, make_store

D = Decimal
PAYIN = "/gateway/payin/init"
SENDERS = 6
KEYS = 8


Answer = tuple[int, str | None, Any]  # status, Idempotent-Replayed, body


def _send_at_once(app: Any, raw: bytes, headers: dict[str, str]) -> list[Answer]:
    """`SENDERS` threads post the same request together, each on its own client."""
    barrier = threading.Barrier(SENDERS)
    answers: list[Answer] = []
    lock = threading.Lock()

    def send() -> None:
        with TestClient(app) as client:
            barrier.wait()
            response = client.post(PAYIN, content=raw, headers=headers)
        with lock:
            answers.append(
                (response.status_code, response.headers.get("Idempotent-Replayed"), response.json())
            )

    threads = [threading.Thread(target=send) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_one_key_sent_at_once_creates_one_order(committed_db) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.gateway.server import app

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("90"))
        store = make_store(session, ref, lower=D("1"), upper=D("100000"))
        fiat = ref.fiat.code
    outcomes: dict[str, list[Answer]] = {}
    for round_ in range(KEYS):
        key = f"race-{round_}-{uuid.uuid4().hex[:8]}"
        raw = json.dumps(
            {"merchant_order_id": key, "amount_fiat": "1500.00", "fiat_currency": fiat}
        ).encode()
        headers = gateway_headers(store, "POST", PAYIN, raw, idempotency_key=key)
        outcomes[key] = _send_at_once(app, raw, headers)

    for key, answers in outcomes.items():
        assert len(answers) == SENDERS, key
        created = [body for status, replayed, body in answers if status == 201 and not replayed]
        replays = [body for status, replayed, body in answers if status == 201 and replayed]
        busy = [body for status, _, body in answers if status == 409]
        assert len(created) == 1, (key, answers)
        assert all(body == created[0] for body in replays), key
        assert all(body["code"] == "idempotency_key_in_progress" for body in busy), (key, busy)
        assert len(created) + len(replays) + len(busy) == SENDERS, (key, answers)
        with read_session() as session:
            orders = session.scalar(
                select(func.count())
                .select_from(IncomingOrder)
                .where(IncomingOrder.merchant_order_id == key)
            )
            keys = session.scalar(
                select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.key == key)
            )
        assert (orders, keys) == (1, 1), key
