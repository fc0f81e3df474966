"""Input discipline on the real gateway and role apps: NUL characters, body caps, bounded ids,
strict amounts and bodies, capped error lists, one status for malformed bodies, the 500 problem,
and payer confirm refusing anything but a PayIn before any screening."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway.callbacks import router as callbacks_router
from jivapay.api_routers.gateway.payer_page import payer_router
from jivapay.api_routers.gateway.router import router as gateway_router
from jivapay.database.engine import get_engine
from jivapay.database.models import AuditLog, IncomingOrder, OrderHistory
from jivapay.enums import Role
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.servers.exception_handlers import MAX_REPORTED_ERRORS, PROBLEM_JSON
from jivapay.services.order_processor import process_incoming_order
from tests.factories import (
    Ref,
    StoreWorld,
    gateway_headers,
    make_bank_method,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
)

D = Decimal


def _gateway(*extra: APIRouter) -> FastAPIClient:
    return TestClient(
        build_app(
            ServerName.GATEWAY, routers=[gateway_router, callbacks_router, payer_router, *extra]
        ),
        raise_server_exceptions=False,
    )


FastAPIClient = TestClient


@pytest.fixture
def client(db: Session) -> TestClient:
    return _gateway()


@pytest.fixture
def world(db: Session) -> tuple[Ref, StoreWorld]:
    ref = make_reference(db, rate=D("100"))
    make_bank_method(db, ref)
    store = make_store(db, ref, lower=D("100"), upper=D("50000"), balance=D("1000"))
    trader = make_trader(db, ref, deposit=D("10000"))
    make_requisite(db, trader, ref, number="2200123456789012")
    db.commit()
    return ref, store


def critical_errors(db: Session) -> int:
    """How many `system.critical_error` audit rows there are (an unexpected error writes one)."""
    db.expire_all()
    return (
        db.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "system.critical_error")
        )
        or 0
    )


def _send(
    client: TestClient, store: StoreWorld, method: str, path: str, raw: bytes, **headers: str
) -> Any:
    signed = gateway_headers(store, method, path, raw, idempotency_key=uuid.uuid4().hex)
    return client.request(method, path, content=raw, headers={**signed, **headers})


def _payin(ref: Ref, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_order_id": f"m-{uuid.uuid4().hex[:10]}",
        "amount_fiat": "1000.00",
        "fiat_currency": ref.fiat.code,
        "customer_id": "cust-1",
    }
    return body | overrides


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def _orders(db: Session) -> int:
    db.expire_all()
    return int(db.scalar(select(func.count()).select_from(IncomingOrder)) or 0)


# ---------------------------------------------------------------------- NUL characters


@pytest.mark.parametrize(
    "field",
    ["merchant_order_id", "customer_id", "fiat_currency", "callback_url", "payment_method"],
)
def test_nul_in_any_intake_field_is_422_and_writes_nothing(
    db: Session, client: TestClient, world: tuple[Ref, StoreWorld], field: str
):
    ref, store = world
    value = "https://shop.example/cb\x00" if field == "callback_url" else "x\x00y"
    raw = json.dumps(_payin(ref, **{field: value})).encode()
    before = _orders(db)

    body = _problem(_send(client, store, "POST", "/gateway/payin/init", raw), 422)

    assert body["code"] == "validation_failed"
    assert _orders(db) == before


def test_nul_in_beneficiary_name_is_422(db: Session, client: TestClient, world):
    ref, store = world
    payout = _payin(
        ref,
        payment_method=ref.method.code,
        bank=ref.bank.code,
        beneficiary={"number": "4111111111114242", "name": "Ivan\x00"},
    )
    raw = json.dumps(payout).encode()

    _problem(_send(client, store, "POST", "/gateway/payout/init", raw), 422)


def test_nul_in_path_and_query_is_422(db: Session, client: TestClient, world):
    _, store = world
    path = "/gateway/callbacks?order_id=a%00b"
    _problem(client.get(path, headers=gateway_headers(store, "GET", path)), 422)
    _problem(client.get("/pay/abc%00def"), 422)
    _problem(client.post("/gateway/payin/confirm/abc%00"), 422)


def test_nul_in_login_form_and_json_is_422_not_500(db: Session):
    merchant = TestClient(build_app(Role.MERCHANT), raise_server_exceptions=False)
    support = TestClient(build_app(Role.SUPPORT), raise_server_exceptions=False)

    form = {"username": "a\x00@example.com", "password": "x"}
    assert merchant.post("/merchant/auth/token", data=form).status_code == 422
    answer = support.post("/support/auth/login", json={"email": "a\x00@b.c", "password": "x"})
    assert answer.status_code == 422


def test_engine_hides_sql_parameters_from_errors_and_logs(db: Session):
    assert get_engine().hide_parameters is True


# ---------------------------------------------------------------------- body caps


def test_oversized_json_body_is_413_before_it_is_read(db: Session, client, world, monkeypatch):
    from jivapay.config import get_settings

    monkeypatch.setattr(get_settings(), "MAX_JSON_BODY_BYTES", 2048)
    ref, store = world
    big = json.dumps(_payin(ref, customer_id="x" * 5000)).encode()

    declared = _problem(_send(client, store, "POST", "/gateway/payin/init", big), 413)
    assert declared["code"] == "payload_too_large"

    def chunks() -> Any:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    headers = gateway_headers(store, "POST", "/gateway/payin/init", big, idempotency_key="k-1")
    streamed = client.post("/gateway/payin/init", content=chunks(), headers=headers)
    _problem(streamed, 413)


def test_oversized_multipart_is_413(db: Session, client, monkeypatch):
    from jivapay.config import get_settings

    monkeypatch.setattr(get_settings(), "MAX_MULTIPART_BODY_BYTES", 4096)
    files = {"receipt": ("r.png", b"\x89PNG" + b"0" * 10_000, "image/png")}

    _problem(client.post("/gateway/payin/confirm/anything", files=files), 413)


# ---------------------------------------------------------------------- bounded integers, strict bodies


def test_out_of_range_ids_are_422_not_500(db: Session, client, world):
    _, store = world
    path = "/gateway/callbacks/9223372036854775808/resend"

    response = client.post(path, headers=gateway_headers(store, "POST", path))

    _problem(response, 422)


@pytest.mark.parametrize(
    "amount",
    [
        "1_500",
        "\u0661\u0665\u0660\u0660",
        "\uff11\uff15\uff10\uff10",
        " 1500.00 ",
        "1e3",
        "+1500",
        "1500.",
        "-5",
        "0",
    ],
)
def test_amounts_only_as_ascii_decimal_strings(db: Session, client, world, amount: str):
    ref, store = world
    raw = json.dumps(_payin(ref, amount_fiat=amount)).encode()

    _problem(_send(client, store, "POST", "/gateway/payin/init", raw), 422)


def test_exact_json_number_amount_is_accepted(db: Session, client, world):
    ref, store = world
    raw = json.dumps(_payin(ref)).replace('"1000.00"', "1000.10").encode()

    response = _send(client, store, "POST", "/gateway/payin/init", raw)

    assert response.status_code == 201, response.text
    assert response.json()["amount_fiat"] == "1000.10"


def test_json_numbers_are_read_exactly_and_never_as_floats() -> None:
    from jivapay.api_routers.routing import MAX_NUMBER_CHARS, loads

    long = "1." + "0" * MAX_NUMBER_CHARS
    document = loads(
        '{"exact": 12.34567891, "whole": 5, "nan": NaN, "inf": -Infinity, "tiny": 1e-99999999,'
        f' "beyond": 1e99999999999999999999, "long": {long}, "list": [0.1, 2]}}'
    )
    assert document["exact"] == Decimal("12.34567891") and type(document["exact"]) is Decimal
    assert document["whole"] == 5 and type(document["whole"]) is int
    assert document["list"] == [Decimal("0.1"), 2] and type(document["list"][0]) is Decimal
    # Not numbers the fields can take: they stay text, which decimal and integer fields refuse.
    assert (document["nan"], document["inf"]) == ("NaN", "-Infinity")
    assert document["tiny"] == "1e-99999999" and document["beyond"] == "1e99999999999999999999"
    assert document["long"] == long


def test_cancel_refuses_a_bare_json_number_body(db: Session, client, world):
    ref, store = world
    created = _send(client, store, "POST", "/gateway/payin/init", json.dumps(_payin(ref)).encode())
    order_id = created.json()["order_id"]

    response = _send(client, store, "POST", f"/gateway/orders/{order_id}/cancel", b"1.5")

    _problem(response, 422)


def test_error_list_is_capped(db: Session, client, world):
    ref, store = world
    body = _payin(ref) | {f"unknown_{n}": n for n in range(5000)}

    response = _send(client, store, "POST", "/gateway/payin/init", json.dumps(body).encode())

    problem = _problem(response, 422)
    assert len(problem["errors"]) == MAX_REPORTED_ERRORS
    assert problem["error_count"] == 5000
    assert len(response.content) < 10_000


def test_non_utf8_and_malformed_json_answer_the_same_422(db: Session, client, world):
    _, store = world
    not_utf8 = _send(client, store, "POST", "/gateway/payin/init", b'{"a": "\xff\xfe"}')
    malformed = _send(client, store, "POST", "/gateway/payin/init", b'{"a": ')

    assert _problem(not_utf8, 422)["code"] == _problem(malformed, 422)["code"]


def test_unexpected_error_problem_has_instance_and_leaks_nothing(db: Session):
    router = APIRouter()

    @router.get("/gateway/boom")
    def boom() -> None:
        raise RuntimeError("secret detail 4111111111111111")

    response = _gateway(router).get("/gateway/boom")

    body = _problem(response, 500)
    assert body["instance"] == "/gateway/boom"
    assert "secret" not in response.text


# ---------------------------------------------------------------------- payer confirm


def test_payer_confirm_on_a_payout_is_404_and_changes_nothing(db: Session, client, world):
    ref, store = world
    payout = _payin(
        ref,
        payment_method=ref.method.code,
        bank=ref.bank.code,
        beneficiary={"number": "4111111111114242", "name": "Ivan Payee"},
    )
    created = _send(client, store, "POST", "/gateway/payout/init", json.dumps(payout).encode())
    assert created.status_code == 201, created.text
    order_id = created.json()["order_id"]
    incoming_id = db.scalars(
        select(IncomingOrder.id).where(IncomingOrder.public_id == order_id)
    ).one()
    process_incoming_order(incoming_id)
    db.expire_all()
    status_before = db.scalar(select(OrderHistory.status).where(OrderHistory.public_id == order_id))

    response = client.post(f"/gateway/payin/confirm/{order_id}")

    assert _problem(response, 404)["code"] == "not_found"
    db.expire_all()
    after = db.scalar(select(OrderHistory.status).where(OrderHistory.public_id == order_id))
    assert after == status_before
