"""Receipts and dispute evidence over HTTP, stored on a real S3-compatible server (moto's).

Covers the payer's confirm with a receipt (required per store), the trader's PayOut confirm that
requires one, disputes with evidence (store and trader), refusals that write nothing (type, size,
missing receipt, storage down), reading through presigned URLs only, who may read a document, and
the deletion of an uploaded object when its transaction does not commit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jivapay.api_routers.common.trader_orders import router as trader_router
from jivapay.api_routers.gateway.payer_page import payer_router
from jivapay.api_routers.gateway.router import router as gateway_router
from jivapay.config import get_settings, reset_settings_cache
from jivapay.database.engine import SessionLocal
from jivapay.database.models import OrderHistory, Trader, UploadedDocument
from jivapay.embedded import free_port
from jivapay.enums import DocumentKind, OrderType, Role
from jivapay.security import Principal, StorePrincipal, create_access_token
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.services import document_service, fraud_lists
from jivapay.services.order_processor import process_incoming_order
from jivapay.utils import s3_client
from jivapay.utils.config_loader import set_config_value
from jivapay.utils.exceptions import NotFound
from tests.factories import (
    Ref,
    StoreWorld,
    gateway_headers,
    make_incoming,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
)
from tests.sample_files import jpeg_bytes, pdf_bytes, png_bytes

D = Decimal
PNG = png_bytes()
JPEG = jpeg_bytes()
PDF = pdf_bytes()
GIF = b"GIF89a" + os.urandom(500)
TEXT = b"I paid, trust me\n"

pytestmark = pytest.mark.usefixtures("s3_endpoint")


@dataclass(frozen=True)
class World:
    ref: Ref
    strict: StoreWorld  # require_payer_receipt
    lenient: StoreWorld
    trader: Trader
    other_trader: Trader


@pytest.fixture
def world(db: Session) -> World:
    ref = make_reference(db, rate=D("100"))
    strict = make_store(db, ref, balance=D("1000"), require_payer_receipt=True)
    lenient = make_store(db, ref, balance=D("1000"))
    trader = make_trader(db, ref)
    other = make_trader(db, ref, priority=9, in_work=False)
    make_requisite(db, trader, ref)
    db.commit()
    return World(ref, strict, lenient, trader, other)


@pytest.fixture
def gateway(db: Session) -> TestClient:
    return TestClient(build_app(ServerName.GATEWAY, routers=[gateway_router, payer_router]))


@pytest.fixture
def trader_api(db: Session) -> TestClient:
    return TestClient(build_app(Role.TRADER, routers=[trader_router]))


def _order(db: Session, world: World, store: StoreWorld, kind: OrderType) -> OrderHistory:
    incoming = make_incoming(db, store, world.ref, amount_fiat=D("1000.00"), order_type=kind)
    db.commit()
    result = process_incoming_order(incoming.id)
    assert result.order_id is not None, result
    order = db.get(OrderHistory, result.order_id)
    assert order is not None and order.trader_id == world.trader.id
    return order


def _auth(trader: Trader) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_access_token(trader.user_id, Role.TRADER)}"}


def _status(db: Session, order: OrderHistory) -> str:
    db.expire_all()
    status: str = db.scalars(select(OrderHistory.status).where(OrderHistory.id == order.id)).one()
    return status


def _reason(db: Session, order: OrderHistory) -> str | None:
    db.expire_all()
    reason: str | None = db.scalars(
        select(OrderHistory.dispute_reason).where(OrderHistory.id == order.id)
    ).one()
    return reason


def _documents(db: Session, order: OrderHistory) -> list[UploadedDocument]:
    db.expire_all()
    return list(
        db.scalars(
            select(UploadedDocument)
            .where(UploadedDocument.order_id == order.id)
            .order_by(UploadedDocument.id)
        )
    )


def _stored_keys(order: OrderHistory) -> list[str]:
    listing = s3_client.get_client().list_objects_v2(
        Bucket=get_settings().S3_BUCKET_NAME, Prefix=f"receipts/{order.public_id}/"
    )
    return [item["Key"] for item in listing.get("Contents", [])]


def _assert_nothing_written(db: Session, order: OrderHistory, status: str) -> None:
    assert _status(db, order) == status
    assert _documents(db, order) == []
    assert _stored_keys(order) == []


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status
    return body


def _multipart(
    files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """Encode a multipart body once, so the store can sign exactly the bytes it sends."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def _signed_multipart(
    client: TestClient,
    store: StoreWorld,
    path: str,
    files: list[tuple[str, tuple[str, bytes, str]]],
    data: dict[str, str] | None = None,
) -> httpx.Response:
    body, content_type = _multipart(files, data)
    headers = gateway_headers(store, "POST", path, body) | {"Content-Type": content_type}
    return client.post(path, content=body, headers=headers)


@contextmanager
def storage_down() -> Iterator[None]:
    """Point S3 at a port nothing listens on for the block."""
    saved = os.environ["S3_ENDPOINT_URL"]
    os.environ["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    reset_settings_cache()
    try:
        yield
    finally:
        os.environ["S3_ENDPOINT_URL"] = saved
        reset_settings_cache()


# --------------------------------------------------------------------------- payer


def test_payer_receipt_is_stored_privately_and_read_through_a_presigned_url(
    db: Session, world: World, gateway: TestClient, s3_endpoint: str
) -> None:
    order = _order(db, world, world.strict, OrderType.PAYIN)
    # The declared type and name lie; the bytes decide (a PNG).
    response = gateway.post(
        f"/gateway/payin/confirm/{order.public_id}",
        files={"receipt": ("receipt.pdf", PNG, "application/pdf")},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"order_id": order.public_id, "status": "paid"}

    [doc] = _documents(db, order)
    assert doc.kind == DocumentKind.CLIENT_RECEIPT and doc.uploaded_by_user_id is None
    assert doc.content_type == "image/png" and doc.size_bytes == len(PNG)
    assert doc.sha256 == hashlib.sha256(PNG).hexdigest()
    assert doc.s3_key.startswith(f"receipts/{order.public_id}/") and doc.s3_key.endswith(".png")
    assert _stored_keys(order) == [doc.s3_key]

    path = f"/gateway/payin/status/{order.public_id}"
    status = gateway.get(path, headers=gateway_headers(world.strict, "GET", path)).json()
    [receipt] = status["receipts"]
    assert receipt["id"] == doc.id and receipt["kind"] == "client_receipt"
    assert receipt["sha256"] == doc.sha256 and receipt["size"] == len(PNG)
    download = httpx.get(receipt["url"])
    assert download.status_code == 200 and download.content == PNG
    assert hashlib.sha256(download.content).hexdigest() == doc.sha256

    bucket = get_settings().S3_BUCKET_NAME
    assert httpx.get(f"{s3_endpoint}/{bucket}/{doc.s3_key}").status_code == 403


def test_required_receipt_missing_is_422_and_nothing_changes(
    db: Session, world: World, gateway: TestClient
) -> None:
    order = _order(db, world, world.strict, OrderType.PAYIN)
    response = gateway.post(f"/gateway/payin/confirm/{order.public_id}")
    _problem(response, 422, "receipt_required")
    response = gateway.post(f"/gateway/payin/confirm/{order.public_id}", json={})
    _problem(response, 422, "receipt_required")
    _assert_nothing_written(db, order, "pending")


def test_a_blocked_payer_confirming_opens_a_dispute_with_the_receipt_as_evidence(
    db: Session, world: World, gateway: TestClient
) -> None:
    """The payer's confirmation that a fraud rule stops still checks the receipt the store
    requires, and keeps the one sent: the dispute's evidence."""
    blocked = _order(db, world, world.strict, OrderType.PAYIN)
    db.execute(
        update(OrderHistory)
        .where(OrderHistory.id == blocked.id)
        .values(customer_ip="192.0.2.77", customer_id=None)
    )
    fraud_lists.add_entry(
        db, kind="ip", value="192.0.2.77", list_type="block", reason=None, actor_user_id=None
    )
    db.commit()
    path = f"/gateway/payin/confirm/{blocked.public_id}"
    _problem(gateway.post(path, json={}), 422, "receipt_required")
    _problem(
        gateway.post(path, files={"receipt": ("r.gif", GIF, "image/gif")}),
        415,
        "unsupported_file_type",
    )
    _assert_nothing_written(db, blocked, "pending")

    response = gateway.post(path, files={"receipt": ("r.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json() == {"order_id": blocked.public_id, "status": "disputed"}
    assert _reason(db, blocked) == "fraud check: blocklist_ip"
    [doc] = _documents(db, blocked)
    assert doc.kind == DocumentKind.CLIENT_RECEIPT and doc.sha256 == hashlib.sha256(PNG).hexdigest()
    assert _stored_keys(blocked) == [doc.s3_key]


def test_receipt_optional_when_the_store_does_not_require_it(
    db: Session, world: World, gateway: TestClient
) -> None:
    plain = _order(db, world, world.lenient, OrderType.PAYIN)
    response = gateway.post(f"/gateway/payin/confirm/{plain.public_id}", json={})
    assert response.status_code == 200 and response.json()["status"] == "paid"
    assert _documents(db, plain) == []

    with_pdf = _order(db, world, world.lenient, OrderType.PAYIN)
    response = gateway.post(
        f"/gateway/payin/confirm/{with_pdf.public_id}",
        files={"receipt": ("r.bin", PDF, "application/octet-stream")},
    )
    assert response.status_code == 200
    [doc] = _documents(db, with_pdf)
    assert doc.content_type == "application/pdf" and doc.s3_key.endswith(".pdf")

    # A repeat answers the current state and stores nothing more.
    again = gateway.post(
        f"/gateway/payin/confirm/{with_pdf.public_id}",
        files={"receipt": ("r.pdf", PDF, "application/pdf")},
    )
    assert again.status_code == 200 and again.json()["status"] == "paid"
    assert len(_documents(db, with_pdf)) == 1 and len(_stored_keys(with_pdf)) == 1


@pytest.mark.parametrize(
    ("content", "declared"),
    [(GIF, "image/gif"), (TEXT, "image/png"), (b"%PD", "application/pdf")],
    ids=["gif", "text-declared-png", "truncated-pdf-magic"],
)
def test_unsupported_type_is_415_and_nothing_written(
    db: Session, world: World, gateway: TestClient, content: bytes, declared: str
) -> None:
    order = _order(db, world, world.strict, OrderType.PAYIN)
    response = gateway.post(
        f"/gateway/payin/confirm/{order.public_id}",
        files={"receipt": ("receipt.png", content, declared)},
    )
    _problem(response, 415, "unsupported_file_type")
    _assert_nothing_written(db, order, "pending")


def test_empty_file_is_refused(db: Session, world: World, gateway: TestClient) -> None:
    order = _order(db, world, world.strict, OrderType.PAYIN)
    response = gateway.post(
        f"/gateway/payin/confirm/{order.public_id}",
        files={"receipt": ("receipt.png", b"", "image/png")},
    )
    _problem(response, 422, "empty_file")
    _assert_nothing_written(db, order, "pending")


def test_oversize_is_413_and_nothing_written(
    db: Session, world: World, gateway: TestClient
) -> None:
    set_config_value(db, "RECEIPT_MAX_BYTES", 2048)
    db.commit()
    order = _order(db, world, world.strict, OrderType.PAYIN)
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
    response = gateway.post(
        f"/gateway/payin/confirm/{order.public_id}",
        files={"receipt": ("big.png", big, "image/png")},
    )
    body = _problem(response, 413, "file_too_large")
    assert body["max_bytes"] == 2048
    _assert_nothing_written(db, order, "pending")

    # Exactly at the limit is accepted.
    ok = png_bytes(16)
    set_config_value(db, "RECEIPT_MAX_BYTES", len(ok))
    db.commit()
    response = gateway.post(
        f"/gateway/payin/confirm/{order.public_id}",
        files={"receipt": ("ok.png", ok, "image/png")},
    )
    assert response.status_code == 200 and len(_documents(db, order)) == 1


def test_storage_down_is_503_and_the_order_keeps_its_status(
    db: Session, world: World, gateway: TestClient, trader_api: TestClient
) -> None:
    payin = _order(db, world, world.strict, OrderType.PAYIN)
    payout = _order(db, world, world.lenient, OrderType.PAYOUT)
    with storage_down():
        response = gateway.post(
            f"/gateway/payin/confirm/{payin.public_id}",
            files={"receipt": ("r.png", PNG, "image/png")},
        )
        body = _problem(response, 503, "storage_unavailable")
        assert "retry later" in body["detail"].lower()  # a 5xx names its code, not internals
        response = trader_api.post(
            f"/trader/orders/{payout.public_id}/confirm",
            headers=_auth(world.trader),
            files={"receipt": ("r.jpg", JPEG, "image/jpeg")},
        )
        _problem(response, 503, "storage_unavailable")
    _assert_nothing_written(db, payin, "pending")
    _assert_nothing_written(db, payout, "pending")


def test_missing_bucket_is_502(db: Session, world: World, gateway: TestClient) -> None:
    order = _order(db, world, world.strict, OrderType.PAYIN)
    saved = os.environ["S3_BUCKET_NAME"]
    os.environ["S3_BUCKET_NAME"] = "jivapay-no-such-bucket"
    reset_settings_cache()
    try:
        response = gateway.post(
            f"/gateway/payin/confirm/{order.public_id}",
            files={"receipt": ("r.png", PNG, "image/png")},
        )
    finally:
        os.environ["S3_BUCKET_NAME"] = saved
        reset_settings_cache()
    _problem(response, 502, "storage_error")
    _assert_nothing_written(db, order, "pending")


# --------------------------------------------------------------------------- trader


def test_trader_payout_confirm_requires_a_receipt_and_stores_it(
    db: Session, world: World, trader_api: TestClient
) -> None:
    order = _order(db, world, world.lenient, OrderType.PAYOUT)
    path = f"/trader/orders/{order.public_id}/confirm"
    _problem(trader_api.post(path, headers=_auth(world.trader)), 422, "receipt_required")
    _assert_nothing_written(db, order, "pending")

    response = trader_api.post(
        path, headers=_auth(world.trader), files={"receipt": ("sent.jpg", JPEG, "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"order_id": order.public_id, "status": "completed", "changed": True}
    [doc] = _documents(db, order)
    assert doc.kind == DocumentKind.TRADER_RECEIPT
    assert doc.uploaded_by_user_id == world.trader.user_id
    assert doc.content_type == "image/jpeg" and doc.sha256 == hashlib.sha256(JPEG).hexdigest()

    view = trader_api.get(f"/trader/orders/{order.public_id}", headers=_auth(world.trader))
    [receipt] = view.json()["receipts"]
    assert receipt["kind"] == "trader_receipt" and httpx.get(receipt["url"]).content == JPEG
    listing = trader_api.get("/trader/orders", headers=_auth(world.trader)).json()
    listed = next(i for i in listing["items"] if i["order_id"] == order.public_id)
    assert [r["id"] for r in listed["receipts"]] == [doc.id]

    # Confirming again answers the state without asking for another receipt.
    again = trader_api.post(path, headers=_auth(world.trader))
    assert again.status_code == 200 and again.json()["changed"] is False


def test_trader_payin_confirm_needs_no_receipt_and_others_cannot_upload(
    db: Session, world: World, trader_api: TestClient
) -> None:
    order = _order(db, world, world.lenient, OrderType.PAYIN)
    path = f"/trader/orders/{order.public_id}/confirm"
    stranger = trader_api.post(
        path, headers=_auth(world.other_trader), files={"receipt": ("r.png", PNG, "image/png")}
    )
    _problem(stranger, 404, "not_found")
    _assert_nothing_written(db, order, "pending")

    response = trader_api.post(path, headers=_auth(world.trader))
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert _documents(db, order) == []


# --------------------------------------------------------------------------- disputes


def test_store_dispute_with_evidence_files(db: Session, world: World, gateway: TestClient) -> None:
    order = _order(db, world, world.lenient, OrderType.PAYIN)
    path = f"/gateway/orders/{order.public_id}/dispute"
    response = _signed_multipart(
        gateway,
        world.lenient,
        path,
        files=[
            ("evidence", ("chat.png", PNG, "image/png")),
            ("evidence", ("statement.pdf", PDF, "application/pdf")),
        ],
        data={"reason": "customer says paid"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "disputed"
    assert [r["kind"] for r in body["receipts"]] == ["dispute_evidence", "dispute_evidence"]
    assert [httpx.get(r["url"]).content for r in body["receipts"]] == [PNG, PDF]
    assert _reason(db, order) == "customer says paid"
    docs = _documents(db, order)
    assert [d.content_type for d in docs] == ["image/png", "application/pdf"]
    assert sorted(_stored_keys(order)) == sorted(d.s3_key for d in docs)


def test_store_dispute_refuses_a_bad_file_and_keeps_the_json_body(
    db: Session, world: World, gateway: TestClient
) -> None:
    order = _order(db, world, world.lenient, OrderType.PAYIN)
    path = f"/gateway/orders/{order.public_id}/dispute"
    # One good file and one bad: nothing is uploaded, since all are checked first.
    response = _signed_multipart(
        gateway,
        world.lenient,
        path,
        files=[
            ("evidence", ("a.png", PNG, "image/png")),
            ("evidence", ("b.txt", TEXT, "text/plain")),
        ],
        data={"reason": "x"},
    )
    _problem(response, 415, "unsupported_file_type")
    _assert_nothing_written(db, order, "pending")

    raw = b'{"reason": "not received"}'
    headers = gateway_headers(world.lenient, "POST", path, raw)
    response = gateway.post(path, content=raw, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "disputed"
    assert response.json()["receipts"] == []


def test_trader_dispute_with_evidence_and_validation(
    db: Session, world: World, trader_api: TestClient
) -> None:
    order = _order(db, world, world.lenient, OrderType.PAYIN)
    path = f"/trader/orders/{order.public_id}/dispute"
    auth = _auth(world.trader)
    too_long = trader_api.post(
        path, headers=auth, data={"reason": "x" * 1001}, files={"evidence": ("a.png", PNG)}
    )
    assert too_long.status_code == 422
    unknown = trader_api.post(
        path, headers=auth, data={"note": "x"}, files={"evidence": ("a", PNG)}
    )
    assert unknown.status_code == 422
    _assert_nothing_written(db, order, "pending")

    response = trader_api.post(
        path, headers=auth, data={"reason": "fake receipt"}, files={"evidence": ("a.jpg", JPEG)}
    )
    assert response.status_code == 200 and response.json()["status"] == "disputed"
    [doc] = _documents(db, order)
    assert doc.kind == DocumentKind.DISPUTE_EVIDENCE and doc.uploaded_by_user_id is not None
    assert _reason(db, order) == "fake receipt"


# --------------------------------------------------------------------------- reading and cleanup


def test_document_url_is_given_only_to_those_who_may_see_the_order(
    db: Session, world: World, gateway: TestClient
) -> None:
    order = _order(db, world, world.strict, OrderType.PAYIN)
    gateway.post(
        f"/gateway/payin/confirm/{order.public_id}", files={"receipt": ("r.png", PNG, "image/png")}
    )
    [doc] = _documents(db, order)

    def principal(trader: Trader) -> Principal:
        return Principal(trader.user_id, Role.TRADER, "t@x", trader.id)

    def store(world_store: StoreWorld) -> StorePrincipal:
        return StorePrincipal(world_store.store.id, world_store.merchant.id, world_store.public_key)

    allowed: list[document_service.Viewer] = [
        principal(world.trader),
        store(world.strict),
        Principal(world.strict.merchant.user_id, Role.MERCHANT, "m@x", world.strict.merchant.id),
        Principal(1, Role.SUPPORT, "s@x", 1, permissions=("orders:view:all",)),
        document_service.PayerCapability(order.public_id),
    ]
    for viewer in allowed:
        url = document_service.document_url(db, document_id=doc.id, viewer=viewer)
        assert httpx.get(url).content == PNG
    denied: list[document_service.Viewer] = [
        principal(world.other_trader),
        store(world.lenient),
        Principal(1, Role.SUPPORT, "s@x", 1, permissions=("orders:cancel:all",)),
        document_service.PayerCapability("ord_someone_else"),
    ]
    for viewer in denied:
        with pytest.raises(NotFound):
            document_service.document_url(db, document_id=doc.id, viewer=viewer)
    with pytest.raises(NotFound):
        document_service.document_url(db, document_id=doc.id + 10**6, viewer=allowed[0])


def test_upload_is_deleted_when_its_transaction_does_not_commit(db: Session, world: World) -> None:
    order = _order(db, world, world.lenient, OrderType.PAYIN)
    session = SessionLocal()
    try:
        kept = session.get(OrderHistory, order.id)
        assert kept is not None
        doc = document_service.store_document(
            session,
            order=kept,
            kind=DocumentKind.CLIENT_RECEIPT,
            upload=PNG,
            filename="r.png",
            uploaded_by_user_id=None,
        )
        assert s3_client.object_exists(doc.s3_key)
        rolled_back_key = doc.s3_key
        session.rollback()
        assert not s3_client.object_exists(rolled_back_key)

        kept = session.get(OrderHistory, order.id)
        assert kept is not None
        doc = document_service.store_document(
            session,
            order=kept,
            kind=DocumentKind.CLIENT_RECEIPT,
            upload=PDF,
            uploaded_by_user_id=None,
        )
        committed_key = doc.s3_key
        session.commit()
    finally:
        session.close()
    assert s3_client.object_exists(committed_key)
    count = db.scalar(
        select(func.count())
        .select_from(UploadedDocument)
        .where(UploadedDocument.order_id == order.id)
    )
    assert count == 1
