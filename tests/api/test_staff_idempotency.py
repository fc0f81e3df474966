"""Staff money moves are idempotent per acting user: a replay answers the first body and moves
nothing, another body with the key is 422, a key in flight is 409, and two parallel submits with one
key (real threads, real PostgreSQL commits) move the money once."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jivapay.database.engine import get_engine
from jivapay.database.models import BalanceTrader, BalanceTraderCryptoHistory, IdempotencyKey
from jivapay.services.idempotency import USER_LOCK_ID_SQL
from jivapay.services.reconciliation import reconcile
from tests.api.staff_support import make_template_staff, row_counts
from tests.factories import make_reference, make_store, make_trader

D = Decimal


@pytest.fixture
def admin_client(db) -> TestClient:  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import app

    return TestClient(app)


@pytest.fixture
def world(db):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    store = make_store(db, ref, balance=D("1000"))
    trader = make_trader(db, ref)
    admin = make_template_staff(db, "super_admin")
    return ref, store, trader, admin


def _history_rows(session: Session, trader_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(BalanceTraderCryptoHistory)
            .join(BalanceTrader, BalanceTrader.id == BalanceTraderCryptoHistory.balance_trader_id)
            .where(BalanceTrader.trader_id == trader_id)
        )
        or 0
    )


def _user_id(headers: dict[str, str]) -> int:
    from jivapay.security import decode_access_token

    return int(decode_access_token(headers["Authorization"].removeprefix("Bearer ")).user_id)


def test_replay_moves_once_and_answers_the_same_body(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, trader, admin = world
    url = f"/admin/balances/traders/{trader.id}/deposit"
    body = {"crypto_currency": ref.crypto.code, "amount": "25", "reason": "top-up"}
    headers = {**admin, "Idempotency-Key": "dep-1"}
    before = _history_rows(db, trader.id)
    first = admin_client.post(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = admin_client.post(url, json=body, headers=headers)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and again.json()["balance"] == "10025.00000000"
    assert _history_rows(db, trader.id) == before + 1
    assert reconcile(db) == []


def test_adjust_replays_and_a_new_key_moves_again(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _, admin = world
    body = {
        "account": "store",
        "account_id": store.store.id,
        "crypto_currency": ref.crypto.code,
        "amount": "-1.5",
        "reason": "correction",
    }
    r1 = admin_client.post(
        "/admin/balances/adjust", json=body, headers={**admin, "Idempotency-Key": "a"}
    )
    r2 = admin_client.post(
        "/admin/balances/adjust", json=body, headers={**admin, "Idempotency-Key": "a"}
    )
    r3 = admin_client.post(
        "/admin/balances/adjust", json=body, headers={**admin, "Idempotency-Key": "b"}
    )
    assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]
    assert r1.json()["balance"] == r2.json()["balance"] == "998.50000000"
    assert r3.json()["balance"] == "997.00000000"
    assert reconcile(db) == []


def test_key_errors_write_nothing(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, trader, admin = world
    url = f"/admin/balances/traders/{trader.id}/withdraw"
    body = {"crypto_currency": ref.crypto.code, "amount": "10", "reason": "payout"}
    assert admin_client.post(url, json=body, headers={**admin, "Idempotency-Key": "w"}).is_success
    before = row_counts(db)
    cases: list[tuple[dict[str, str], dict[str, Any], int, str]] = [
        (admin, body, 400, "idempotency_key_required"),
        ({**admin, "Idempotency-Key": "  "}, body, 400, "idempotency_key_required"),
        ({**admin, "Idempotency-Key": "x" * 256}, body, 400, "idempotency_key_invalid"),
        (
            {**admin, "Idempotency-Key": "w"},
            {**body, "amount": "11"},
            422,
            "idempotency_key_reused",
        ),
    ]
    for headers, payload, status, code in cases:
        r = admin_client.post(url, json=payload, headers=headers)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    # The same key on another route is another request, too.
    r = admin_client.post(
        f"/admin/balances/traders/{trader.id}/deposit",
        json=body,
        headers={**admin, "Idempotency-Key": "w"},
    )
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert row_counts(db) == before


def test_keys_are_scoped_per_acting_user(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, trader, admin = world
    other = make_template_staff(db, "super_admin")
    url = f"/admin/balances/traders/{trader.id}/deposit"
    body = {"crypto_currency": ref.crypto.code, "amount": "1", "reason": "r"}
    a = admin_client.post(url, json=body, headers={**admin, "Idempotency-Key": "same"})
    b = admin_client.post(url, json=body, headers={**other, "Idempotency-Key": "same"})
    assert (a.status_code, b.status_code) == (200, 200)
    assert "Idempotent-Replayed" not in b.headers
    assert b.json()["balance"] == "10002.00000000"
    owners = db.scalars(select(IdempotencyKey.user_id).where(IdempotencyKey.key == "same")).all()
    assert sorted(owners) == sorted([_user_id(admin), _user_id(other)])


def test_key_in_flight_is_409(admin_client, db, world) -> None:  # type: ignore[no-untyped-def]
    ref, _, trader, admin = world
    url = f"/admin/balances/traders/{trader.id}/deposit"
    body = {"crypto_currency": ref.crypto.code, "amount": "1", "reason": "r"}
    params = {"user_id": _user_id(admin), "key": "busy"}
    before = row_counts(db)
    with get_engine().connect() as other:
        other.execute(text(f"SELECT pg_advisory_lock({USER_LOCK_ID_SQL})"), params)
        try:
            r = admin_client.post(url, json=body, headers={**admin, "Idempotency-Key": "busy"})
        finally:
            other.execute(text(f"SELECT pg_advisory_unlock({USER_LOCK_ID_SQL})"), params)
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_progress"
    assert row_counts(db) == before


def test_parallel_submits_with_one_key_move_once(committed_db) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import app

    with committed_db() as session, session.begin():
        ref = make_reference(session, rate=D("50"))
        trader = make_trader(session, ref, deposit=D("100"))
        admin = make_template_staff(session, "super_admin")
        trader_id, code = trader.id, ref.crypto.code

    url = f"/admin/balances/traders/{trader_id}/deposit"
    body = {"crypto_currency": code, "amount": "7", "reason": "double click"}
    headers = {**admin, "Idempotency-Key": "double-click"}
    attempts = 8
    barrier = threading.Barrier(attempts)
    answers: list[tuple[int, dict[str, Any], bool]] = []

    def submit() -> None:
        client = TestClient(app)
        barrier.wait()
        r = client.post(url, json=body, headers=headers)
        answers.append((r.status_code, r.json(), "Idempotent-Replayed" in r.headers))

    threads = [threading.Thread(target=submit) for _ in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert len(answers) == attempts
    fresh = [a for a in answers if a[0] == 200 and not a[2]]
    assert len(fresh) == 1, answers
    for status, payload, _replayed in answers:
        if status == 200:
            assert payload == fresh[0][1]
        else:
            assert (status, payload["code"]) == (409, "idempotency_key_in_progress")
    with committed_db() as session:
        balance = session.scalar(select(BalanceTrader).where(BalanceTrader.trader_id == trader_id))
        assert balance is not None and balance.balance == D("107")
        assert _history_rows(session, trader_id) == 2  # the factory's deposit and this one
        assert reconcile(session) == []
