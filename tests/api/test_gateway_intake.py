"""POST /gateway/payin/init and /gateway/payout/init over HTTP on the real gateway app: the 201
shape, idempotency (replay, reuse, in progress), exact JSON numbers, and every refusal writing nothing
(also an amount that only overflows NUMERIC(20, 8) once converted at the rate)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway.router import router
from jivapay.database.base import utcnow
from jivapay.database.engine import get_engine
from jivapay.database.models import (
    AuditLog,
    BalanceStore,
    BalanceStoreHistory,
    IdempotencyKey,
    IncomingOrder,
)
from jivapay.enums import Role
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.servers.exception_handlers import PROBLEM_JSON
from jivapay.services.idempotency import LOCK_ID_SQL
from jivapay.utils.notifications import reset_critical_audit_limit
from tests.factories import (
    Ref,
    StoreWorld,
    gateway_headers,
    make_bank_method,
    make_reference,
    make_store,
)

D = Decimal
PAYIN = "/gateway/payin/init"
PAYOUT = "/gateway/payout/init"


@pytest.fixture
def client(db: Session) -> TestClient:
    return TestClient(build_app(ServerName.GATEWAY, routers=[router]))


@pytest.fixture
def world(db: Session) -> tuple[Ref, StoreWorld]:
    ref = make_reference(db, rate=D("95.5"))
    make_bank_method(db, ref)
    store = make_store(
        db,
        ref,
        payin_percent=D("2.5"),
        payout_percent=D("3"),
        lower=D("100"),
        upper=D("50000"),
        balance=D("1000"),
    )
    db.commit()
    return ref, store


def _payin_body(ref: Ref, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_order_id": f"m-{uuid.uuid4().hex[:10]}",
        "amount_fiat": "1000.00",
        "fiat_currency": ref.fiat.code,
        "customer_id": "cust-1",
    }
    body.update(overrides)
    return body


def _payout_body(ref: Ref, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_order_id": f"p-{uuid.uuid4().hex[:10]}",
        "amount_fiat": "955.00",
        "fiat_currency": ref.fiat.code,
        "payment_method": ref.method.code,
        "bank": ref.bank.code,
        "beneficiary": {"number": "4111 1111 1111 1111", "name": "Ivan Payee"},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def _post(
    client: TestClient,
    store: StoreWorld,
    path: str,
    body: dict[str, Any] | bytes,
    *,
    key: str | None = "auto",
    **sign: Any,
) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    idem = uuid.uuid4().hex if key == "auto" else key
    headers = gateway_headers(store, "POST", path, raw, idempotency_key=idem, **sign)
    return client.post(path, content=raw, headers=headers)


def _counts(db: Session) -> tuple[int, ...]:
    db.expire_all()
    return tuple(
        db.scalar(select(func.count()).select_from(model)) or 0
        for model in (IncomingOrder, IdempotencyKey, BalanceStoreHistory, AuditLog)
    )


def test_payin_201_shape_and_stored_values(db: Session, client: TestClient, world) -> None:
    ref, store = world
    response = _post(client, store, PAYIN, _payin_body(ref, merchant_order_id="shop-1"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "order_id",
        "merchant_order_id",
        "order_type",
        "status",
        "amount_fiat",
        "fiat_currency",
        "amount_crypto",
        "crypto_currency",
        "exchange_rate",
        "store_commission",
        "payment_url",
        "created_at",
    }
    assert body["merchant_order_id"] == "shop-1" and body["status"] == "new"
    assert body["order_type"] == "payin"
    assert (body["amount_fiat"], body["amount_crypto"], body["exchange_rate"]) == (
        "1000.00",
        "10.47120418",
        "95.50000000",
    )
    assert body["store_commission"] == "0.26178010"
    assert body["payment_url"].endswith(f"/pay/{body['order_id']}")

    incoming = db.scalars(
        select(IncomingOrder).where(IncomingOrder.public_id == body["order_id"])
    ).one()
    assert incoming.amount_crypto == D("10.47120418") and incoming.exchange_rate == D("95.5")
    assert incoming.next_attempt_at == incoming.created_at
    assert incoming.customer_id == "cust-1"


def test_payout_by_fiat_and_by_crypto_freeze_the_store_hold(db: Session, client, world) -> None:
    ref, store = world
    by_fiat = _post(client, store, PAYOUT, _payout_body(ref))
    by_crypto = _post(
        client, store, PAYOUT, _payout_body(ref, amount_fiat=None, amount_crypto=10.5)
    )
    assert (by_fiat.status_code, by_crypto.status_code) == (201, 201), by_crypto.text
    assert (
        by_fiat.json()["amount_crypto"] == "10.00000000" and by_fiat.json()["payment_url"] is None
    )
    assert (by_crypto.json()["amount_fiat"], by_crypto.json()["amount_crypto"]) == (
        "1002.75",
        "10.50000000",
    )
    db.expire_all()
    balance = db.scalars(select(BalanceStore).where(BalanceStore.store_id == store.store.id)).one()
    assert balance.frozen == D("10.3") + D("10.815")
    freezes = db.scalars(
        select(BalanceStoreHistory.frozen_delta).where(
            BalanceStoreHistory.balance_store_id == balance.id,
            BalanceStoreHistory.operation == "freeze",
        )
    ).all()
    assert sorted(freezes) == [D("10.3"), D("10.815")]


def test_same_key_same_body_replays_without_a_second_order(db: Session, client, world) -> None:
    ref, store = world
    raw = json.dumps(_payin_body(ref)).encode()
    first = _post(client, store, PAYIN, raw, key="key-1")
    before = _counts(db)
    second = _post(client, store, PAYIN, raw, key="key-1")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.content == first.content
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert _counts(db) == before


def test_same_key_other_body_is_422(db: Session, client, world) -> None:
    ref, store = world
    assert _post(client, store, PAYIN, _payin_body(ref), key="key-2").status_code == 201
    before = _counts(db)
    response = _post(client, store, PAYIN, _payin_body(ref), key="key-2")
    assert response.status_code == 422 and response.json()["code"] == "idempotency_key_reused"
    assert _counts(db) == before


def test_key_in_flight_elsewhere_is_409(db: Session, client, world) -> None:
    ref, store = world
    before = _counts(db)
    with get_engine().connect() as other:
        other.execute(
            text(f"SELECT pg_advisory_lock({LOCK_ID_SQL})"),
            {"store_id": store.store.id, "key": "busy"},
        )
        try:
            response = _post(client, store, PAYIN, _payin_body(ref), key="busy")
        finally:
            other.execute(
                text(f"SELECT pg_advisory_unlock({LOCK_ID_SQL})"),
                {"store_id": store.store.id, "key": "busy"},
            )
    assert response.status_code == 409 and response.json()["code"] == "idempotency_key_in_progress"
    assert _counts(db) == before
    assert _post(client, store, PAYIN, _payin_body(ref), key="busy").status_code == 201


def test_json_numbers_are_exact(db: Session, client, world) -> None:
    ref, store = world
    raw = (
        b'{"merchant_order_id": "num-1", "amount_fiat": 1000.10, "fiat_currency": "'
        + ref.fiat.code.encode()
        + b'"}'
    )
    ok = _post(client, store, PAYIN, raw)
    assert ok.status_code == 201 and ok.json()["amount_fiat"] == "1000.10"
    before = _counts(db)
    # Through a float these would become 1234.567 -> refused anyway, but 4999.999999999999999 ->
    # 5000.0 (accepted): exact parsing must refuse both as more than 2 decimals.
    for number in (b"1234.567", b"4999.999999999999999"):
        raw = b'{"merchant_order_id": "num-2", "amount_fiat": ' + number + b', "fiat_currency": "'
        response = _post(client, store, PAYIN, raw + ref.fiat.code.encode() + b'"}')
        assert response.status_code == 422, (number, response.text)
        assert any("decimal places" in e["msg"] for e in response.json()["errors"])
    assert _counts(db) == before


@pytest.mark.parametrize(
    ("path", "overrides", "status", "code"),
    [
        (PAYIN, {"amount_fiat": "1234.567"}, 422, "validation_failed"),
        (PAYIN, {"amount_fiat": "-10.00"}, 422, "validation_failed"),
        (PAYIN, {"amount_fiat": "0"}, 422, "validation_failed"),
        (PAYIN, {"amount_fiat": "abc"}, 422, "validation_failed"),
        (PAYIN, {"amount_fiat": "NaN"}, 422, "validation_failed"),
        (PAYIN, {"amount_fiat": "50000.01"}, 422, "amount_out_of_limits"),
        (PAYIN, {"amount_fiat": "99.99"}, 422, "amount_out_of_limits"),
        (PAYIN, {"fiat_currency": "QQQ"}, 422, "unknown_currency"),
        (PAYIN, {"unexpected": "field"}, 422, "validation_failed"),
        (PAYIN, {"payment_method": "nope"}, 422, "unknown_payment_method"),
        (PAYIN, {"customer_ip": "not-an-ip"}, 422, "validation_failed"),
        (PAYOUT, {"amount_crypto": "10"}, 422, "validation_failed"),
        (PAYOUT, {"amount_fiat": None}, 422, "validation_failed"),
        (PAYOUT, {"bank": "nope"}, 422, "unknown_bank"),
        (PAYOUT, {"beneficiary": {"number": "123", "name": "X"}}, 422, "invalid_beneficiary"),
    ],
)
def test_bad_input_is_problem_json_and_writes_nothing(
    db: Session, client, world, path, overrides, status, code
) -> None:
    ref, store = world
    body = (_payin_body if path == PAYIN else _payout_body)(ref, **overrides)
    before = _counts(db)
    response = _post(client, store, path, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["code"] == code
    assert _counts(db) == before


@pytest.mark.parametrize(
    ("path", "overrides", "what"),
    [
        # 10^14 fiat at 0.01: C = 10^16, beyond NUMERIC(20, 8) (12 integer digits).
        (PAYIN, {"amount_fiat": "100000000000000.00"}, "the amount"),
        # C = 9.9 * 10^11 fits, the hold C + 3 % does not.
        (PAYOUT, {"amount_fiat": "9900000000.00"}, "hold"),
        (PAYOUT, {"amount_fiat": None, "amount_crypto": "999999999999"}, "hold"),
    ],
    ids=["payin-amount", "payout-hold-by-fiat", "payout-hold-by-crypto"],
)
def test_converted_amount_or_hold_beyond_numeric_is_a_clear_amount_error(
    db: Session, client, path, overrides, what
) -> None:
    """Within the store's limits, but at a low rate the crypto amount (or a PayOut's C + C*s)
    outgrows the column: refused by intake, not by the database's generic DataError."""
    ref = make_reference(db, rate=D("0.01"))
    make_bank_method(db, ref)
    store = make_store(
        db, ref, payout_percent=D("3"), lower=D("1"), upper=D("900000000000000000"), balance=D("1")
    )
    db.commit()
    body = (_payin_body if path == PAYIN else _payout_body)(ref, **overrides)
    before = _counts(db)
    response = _post(client, store, path, body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "amount_out_of_range", problem
    assert what in problem["detail"] and "NUL" not in problem["detail"], problem
    assert problem["max_amount_crypto"] == "999999999999.99999999"
    assert _counts(db) == before


def test_currency_mismatch(db: Session, client, world) -> None:
    ref, store = world
    other = make_reference(db)
    db.commit()
    before = _counts(db)
    response = _post(client, store, PAYIN, _payin_body(ref, fiat_currency=other.fiat.code))
    assert response.status_code == 422 and response.json()["code"] == "currency_mismatch"
    assert _counts(db) == before


@pytest.mark.parametrize("kind", ["fiat-currencies", "crypto-currencies"])
def test_a_deactivated_currency_takes_no_new_orders(db: Session, client, world, kind) -> None:
    """Audit finding: intake compared the fiat code only, so a currency an admin deactivated
    (reference rows are deactivated, never deleted) still took new orders, while store
    creation and requisite registration refused it. Now refused like an unknown currency, PayIn and
    PayOut alike, writing nothing; active again, intake takes orders again."""
    from tests.api.admin_helpers import admin_client, bearer
    from tests.api.admin_helpers import make_staff as make_admin

    ref, store = world
    other = make_reference(db)
    editor = make_admin(db, Role.ADMIN, ["reference:*"])
    db.commit()
    currency = ref.fiat if kind == "fiat-currencies" else ref.crypto
    url = f"/admin/reference/{kind}/{currency.id}"
    patch = admin_client().patch(url, json={"is_active": False}, headers=bearer(editor))
    assert patch.status_code == 200, patch.text
    before = _counts(db)
    for path, body in ((PAYIN, _payin_body(ref)), (PAYOUT, _payout_body(ref))):
        response = _post(client, store, path, body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "unknown_currency"
        assert (
            currency.code in response.json()["detail"]
            and "deactivated" in response.json()["detail"]
        )
    assert _counts(db) == before
    if kind == "fiat-currencies":
        # Another store's fiat, deactivated: unknown here too (not "works in another currency").
        admin_client().patch(
            f"/admin/reference/fiat-currencies/{other.fiat.id}",
            json={"is_active": False},
            headers=bearer(editor),
        )
        response = _post(client, store, PAYIN, _payin_body(ref, fiat_currency=other.fiat.code))
        assert response.json()["code"] == "unknown_currency", response.text

    patch = admin_client().patch(url, json={"is_active": True}, headers=bearer(editor))
    assert patch.status_code == 200, patch.text
    assert _post(client, store, PAYIN, _payin_body(ref)).status_code == 201


@pytest.mark.parametrize("case", ["missing", "bad", "expired", "unknown_key"])
def test_authentication_failures_are_401_and_write_nothing(
    db: Session, client, world, case
) -> None:
    ref, store = world
    raw = json.dumps(_payin_body(ref)).encode()
    headers = gateway_headers(store, "POST", PAYIN, raw, idempotency_key="auth-key")
    if case == "missing":
        del headers["X-Signature"]
    elif case == "bad":
        headers["X-Signature"] = "0" * 64
    elif case == "expired":
        headers = gateway_headers(
            store, "POST", PAYIN, raw, idempotency_key="auth-key", timestamp=int(time.time()) - 900
        )
    else:
        headers["X-API-Key"] = "pk_unknown"
    before = _counts(db)
    response = client.post(PAYIN, content=raw, headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "invalid_signature"
    assert _counts(db) == before


def test_missing_or_oversized_idempotency_key(db: Session, client, world) -> None:
    ref, store = world
    before = _counts(db)
    missing = _post(client, store, PAYIN, _payin_body(ref), key=None)
    assert missing.status_code == 400 and missing.json()["code"] == "idempotency_key_required"
    too_long = _post(client, store, PAYIN, _payin_body(ref), key="k" * 256)
    assert too_long.status_code == 400 and too_long.json()["code"] == "idempotency_key_invalid"
    assert _counts(db) == before


def test_insufficient_store_balance(db: Session, client, world) -> None:
    ref, _ = world
    poor = make_store(db, ref, balance=D("5"), lower=D("1"))
    db.commit()
    before = _counts(db)
    response = _post(client, poor, PAYOUT, _payout_body(ref))
    assert response.status_code == 422 and response.json()["code"] == "insufficient_balance"
    assert _counts(db) == before


def _critical_rows(db: Session) -> list[AuditLog]:
    db.expire_all()
    query = select(AuditLog).where(AuditLog.action == "system.critical_error").order_by(AuditLog.id)
    return list(db.scalars(query))


def test_stale_rate_is_503(db: Session, client, world) -> None:
    ref, store = world
    ref.rate.updated_at = utcnow() - timedelta(days=3)
    db.commit()
    # A 5xx is recorded as a critical audit row in its own transaction, unless this process's
    # per-minute window is full or a failed write put it in backoff: start from a clean window so
    # the row is always written, and count it apart from the request's own writes.
    reset_critical_audit_limit()
    before, critical_before = _counts(db), len(_critical_rows(db))
    try:
        response = _post(client, store, PAYIN, _payin_body(ref))
    finally:
        reset_critical_audit_limit()
    assert response.status_code == 503 and response.json()["code"] == "stale_exchange_rate"
    critical = _critical_rows(db)
    assert len(critical) == critical_before + 1
    assert critical[-1].details["error_type"] == "StaleExchangeRate"
    incoming, keys, history, audit = _counts(db)
    assert (incoming, keys, history, audit - 1) == before  # the request itself wrote nothing


def test_duplicate_merchant_order_id_with_a_new_key_is_409(db: Session, client, world) -> None:
    ref, store = world
    assert _post(client, store, PAYIN, _payin_body(ref, merchant_order_id="dup")).status_code == 201
    before = _counts(db)
    response = _post(client, store, PAYIN, _payin_body(ref, merchant_order_id="dup"))
    assert response.status_code == 409 and response.json()["code"] == "duplicate_merchant_order_id"
    assert _counts(db) == before


def test_traffic_disabled_store_is_403(db: Session, client, world) -> None:
    ref, store = world
    store.store.trafic_access = False
    db.commit()
    response = _post(client, store, PAYIN, _payin_body(ref))
    assert response.status_code == 403 and response.json()["code"] == "store_traffic_disabled"


def test_intake_never_talks_to_the_broker(
    db: Session, client, world, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API process announces a committed order with `NOTIFY` (`intake_queue`) and publishes no
    task: a broker that is down or hangs can neither fail nor slow intake. (That the announcement
    reaches the workers on commit, and only then: tests/worker/test_intake_feed.py.)"""
    from jivapay import task_queue

    def no_broker(*_: Any, **__: Any) -> None:
        raise AssertionError("intake published a task")

    monkeypatch.setattr(task_queue, "send_task", no_broker)
    monkeypatch.setattr(task_queue.celery_app, "send_task", no_broker)
    ref, store = world
    payin = _post(client, store, PAYIN, _payin_body(ref))
    payout = _post(client, store, PAYOUT, _payout_body(ref))
    assert (payin.status_code, payout.status_code) == (201, 201), (payin.text, payout.text)
