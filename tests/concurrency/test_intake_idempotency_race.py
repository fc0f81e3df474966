"""The same intake sent several times at once with one `Idempotency-Key` (a store's retry racing
its first try), on real parallel requests, each with its own PostgreSQL session: exactly one order
is created; every other answer is that order replayed or 409 `idempotency_key_in_progress`, never
a second order, a 409 for the merchant order id, or a 5xx. A request with a forged signature never
holds the store's key, not even while it is being refused.

The gateway's intake claims the key (its lock and its row) in the statement that authenticates the
store (`idempotency.store_key_claim`, once the process knows the store's key: else after the
signature verified), through the function `claim_idempotency_key`, which reads
the row after taking the lock: a request that gets the lock after the first one committed sees its
row and replays it, even when its statement started before that commit."""

from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from jivapay.database.engine import get_engine
from jivapay.database.models import IdempotencyKey, IncomingOrder
from jivapay.database.utils import atomic_transaction, read_session
from jivapay.services.idempotency import LOCK_ID_SQL
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


# The claim, called for one row after a pause: the statement's snapshot is taken before the pause.
_CLAIM_AFTER_PAUSE = text(
    "SELECT claim_idempotency_key(" + LOCK_ID_SQL + ", :store_id, NULL, :key) AS claim, "
    "(SELECT count(*) FROM idempotency_keys WHERE store_id = :store_id AND key = :key) AS seen "
    "FROM (SELECT pg_sleep(:pause)) AS paused"
)


def test_the_claim_sees_a_row_committed_after_its_statement_started(committed_db) -> None:  # type: ignore[no-untyped-def]
    """The first request holds the key's lock and writes its row; a second request's statement
    starts, the first commits, then the second's claim takes the lock: it reads the row (a
    snapshot taken after the lock), where the same statement's own subquery, on the statement's
    snapshot, does not see it. Reading the row in the authenticating statement would answer a
    second order (or a 409 for its merchant order id) instead of the replay."""
    with atomic_transaction() as session:
        store = make_store(session, make_reference(session)).store
        store_id = store.id
    key = f"late-{uuid.uuid4().hex[:8]}"
    params = {"store_id": store_id, "key": key}
    started = threading.Event()
    seen: list[Any] = []

    def second() -> None:
        with get_engine().connect() as conn:
            started.set()
            seen.append(conn.execute(_CLAIM_AFTER_PAUSE, {**params, "pause": 1.0}).one())
            conn.rollback()

    with get_engine().connect() as first:
        first.execute(text(f"SELECT pg_advisory_xact_lock({LOCK_ID_SQL})"), params)
        first.execute(
            text(
                "INSERT INTO idempotency_keys (store_id, key, request_fingerprint, "
                "response_status, response_body, created_at, completed_at) VALUES "
                "(:store_id, :key, 'f1', 201, CAST('{\"id\": 1}' AS jsonb), now(), now())"
            ),
            params,
        )
        thread = threading.Thread(target=second)
        thread.start()
        started.wait(10)
        time.sleep(0.4)  # the second statement is in its pause, its snapshot taken
        first.commit()  # the row committed, the lock released
    thread.join(30)
    (claim, count_in_statement_snapshot) = seen[0]
    # The window is real: the statement's own snapshot predates the first request's commit.
    assert count_in_statement_snapshot == 0
    assert claim["locked"] is True
    assert claim["row"]["request_fingerprint"] == "f1"
    assert claim["row"]["response_body"] == {"id": 1}


@pytest.mark.parametrize("store_seen", [False, True], ids=["first-intake", "store-seen"])
def test_a_forged_intake_never_holds_the_stores_key(
    committed_db: object, monkeypatch: pytest.MonkeyPatch, store_seen: bool
) -> None:
    """Audit finding: the authenticating statement claimed the `Idempotency-Key` before the
    signature was checked, so a stranger knowing only a store's public key held the store's key
    lock for the whole of its failing request (the refusal's Redis round trips, the rollback),
    and the store's genuine intake with that key meanwhile answered 409. Now the key is claimed
    in that statement only for a signature verified before it (with the key this process last
    verified the store's requests with: `store_seen`), otherwise after the signature verified."""
    from jivapay.middleware import rate_limiting
    from jivapay.servers.gateway.server import app

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("90"))
        store = make_store(session, ref, lower=D("1"), upper=D("100000"))
        fiat = ref.fiat.code

    def intake_body(key: str) -> bytes:
        return json.dumps(
            {"merchant_order_id": key, "amount_fiat": "1500.00", "fiat_currency": fiat}
        ).encode()

    if store_seen:
        earlier = f"earlier-{uuid.uuid4().hex[:8]}"
        with TestClient(app) as client:
            headers = gateway_headers(
                store, "POST", PAYIN, intake_body(earlier), idempotency_key=earlier
            )
            assert (
                client.post(PAYIN, content=intake_body(earlier), headers=headers).status_code == 201
            )
    key = f"order-{uuid.uuid4().hex[:8]}"  # e.g. the merchant's own order id
    raw = intake_body(key)

    # The stranger's refusal is held where it is slow in production anyway: the Redis round trips
    # counting its failure (each up to the limiter's socket timeout).
    inside, release = threading.Event(), threading.Event()
    counted = rate_limiting.store_authentication_failed

    def slow_failure(request: Any) -> None:
        inside.set()
        release.wait(10)
        counted(request)

    monkeypatch.setattr(rate_limiting, "store_authentication_failed", slow_failure)
    forged = {
        "X-API-Key": store.public_key,
        "X-Timestamp": str(int(time.time())),
        "X-Signature": "0" * 64,
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }
    stranger_answer: list[int] = []

    def stranger() -> None:
        with TestClient(app, client=("203.0.113.90", 4000)) as client:
            stranger_answer.append(client.post(PAYIN, content=raw, headers=forged).status_code)

    thread = threading.Thread(target=stranger)
    thread.start()
    try:
        assert inside.wait(10), "the stranger's request never reached the signature refusal"
        with TestClient(app, client=("198.51.100.90", 4000)) as merchant:
            signed = gateway_headers(store, "POST", PAYIN, raw, idempotency_key=key)
            answer = merchant.post(PAYIN, content=raw, headers=signed)
    finally:
        release.set()
        thread.join(30)

    assert stranger_answer == [401]
    assert answer.status_code == 201, answer.text
