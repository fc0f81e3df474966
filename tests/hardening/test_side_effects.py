"""Side effects and faults: publishing after the connection is returned (one try, no retries),
callback URLs refused at intake, any delivery error a recorded attempt, the attempt limit enforced
when claiming, per-order callback sequence numbers, security headers, docs and metrics settings,
and metrics summed over worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway.router import router as gateway_router
from jivapay.config import get_settings
from jivapay.database.engine import get_engine, get_session_factory
from jivapay.database.models import CallbackDelivery, CallbackDeliveryAttempt
from jivapay.database.utils import call_after_commit, enqueue_after_commit
from jivapay.enums import Role
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.services import callback_sender
from jivapay.services.callback_service import deliver_callback
from tests.callback_receiver import Receiver, make_world, new_delivery
from tests.factories import gateway_headers, make_bank_method, make_reference, make_store

D = Decimal


# ---------------------------------------------------------------------- publishing


def test_side_effects_run_after_the_connection_went_back_to_the_pool(database_url: str):
    pool = get_engine().pool
    before = pool.checkedout()  # type: ignore[attr-defined]
    seen: list[int] = []
    with get_session_factory()() as session:
        session.execute(text("SELECT 1"))
        call_after_commit(session, lambda: seen.append(pool.checkedout()))  # type: ignore[attr-defined]
        session.commit()

    assert seen == [before]


def test_tasks_are_published_once_without_retries(database_url: str):
    sent: list[dict[str, Any]] = []

    class Task:
        name = "probe"

        def apply_async(self, **options: Any) -> None:
            sent.append(options)

    with get_session_factory()() as session:
        enqueue_after_commit(session, Task(), 7)
        session.commit()

    assert sent == [{"args": [7], "retry": False, "ignore_result": True}]


# ---------------------------------------------------------------------- callback URLs


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/cb\r\nX-Injected: 1",
        "https://shop.example/c b",
        "https://xn--.example/cb",
        "https://exa\u0000mple.com/",
        "https:///nohost",
    ],
)
def test_bad_callback_urls_are_refused_at_intake(db: Session, url: str):
    ref = make_reference(db)
    make_bank_method(db, ref)
    store = make_store(db, ref)
    db.commit()
    client = TestClient(build_app(ServerName.GATEWAY, routers=[gateway_router]))
    body = {
        "merchant_order_id": f"m-{uuid.uuid4().hex[:8]}",
        "amount_fiat": "1000.00",
        "fiat_currency": ref.fiat.code,
        "callback_url": url,
    }
    raw = json.dumps(body).encode()
    headers = gateway_headers(store, "POST", "/gateway/payin/init", raw, idempotency_key="k1")

    response = client.post("/gateway/payin/init", content=raw, headers=headers)

    assert response.status_code == 422, response.text


def test_a_stored_bad_url_is_a_failed_attempt_not_a_crash(db: Session):
    world = make_world(db, "https://bad.example/cb\r\nX: 1")
    delivery = new_delivery(db, world)
    db.commit()

    outcome = deliver_callback(delivery.id)

    assert outcome.status == "failed"
    db.expire_all()
    assert db.get(CallbackDelivery, delivery.id).status == "failed"  # type: ignore[union-attr]


def test_any_exception_while_sending_is_a_recorded_attempt(
    db: Session, monkeypatch: pytest.MonkeyPatch
):
    receiver = Receiver().start()
    try:
        world = make_world(db, receiver.url)
        delivery = new_delivery(db, world)
        db.commit()

        def explode(*args: Any, **kwargs: Any) -> Any:
            raise httpx.InvalidURL("boom")

        monkeypatch.setattr(httpx.Client, "stream", explode)
        outcome = deliver_callback(delivery.id)
    finally:
        receiver.stop()

    assert outcome.status == "pending"  # retried later, like any failed attempt
    db.expire_all()
    rows = db.scalars(
        select(CallbackDeliveryAttempt).where(CallbackDeliveryAttempt.delivery_id == delivery.id)
    ).all()
    assert len(rows) == 1 and "boom" in (rows[0].error or "")
    assert callback_sender.url_problem("https://a.example/\n") is not None


def test_the_attempt_limit_holds_when_claiming(db: Session):
    world = make_world(db, "https://shop.example/cb")
    delivery = new_delivery(db, world)
    delivery.attempt_count = 10  # e.g. re-queued by a sweeper after the last attempt
    db.commit()

    outcome = deliver_callback(delivery.id)

    assert outcome.status == "failed"
    db.expire_all()
    row = db.get(CallbackDelivery, delivery.id)
    assert row is not None and row.attempt_count == 10 and row.status == "failed"


def test_each_status_change_of_an_order_has_the_next_sequence_number(db: Session):
    world = make_world(db, "https://shop.example/cb")

    first = new_delivery(db, world, status="retrying")
    second = new_delivery(db, world, status="failed")
    other = new_delivery(db, make_world(db, "https://shop.example/cb"))

    assert (first.payload["sequence"], second.payload["sequence"]) == (1, 2)
    assert other.payload["sequence"] == 1


# ---------------------------------------------------------------------- HTTP surface


def test_security_headers_on_every_answer(db: Session):
    def boom() -> None:
        raise RuntimeError("a bug")

    app = build_app(Role.MERCHANT)
    app.add_api_route("/boom", boom)
    http = TestClient(app, raise_server_exceptions=False)
    tls = TestClient(build_app(Role.MERCHANT), base_url="https://testserver")

    answers = (http.get("/health"), http.get("/merchant/me"), http.get("/boom"))
    assert [r.status_code for r in answers] == [200, 401, 500]
    for response in answers:  # the unexpected 500 too, answered outside the other middlewares
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "Strict-Transport-Security" not in response.headers
    assert tls.get("/health").headers["Strict-Transport-Security"].startswith("max-age=")


def test_docs_off_in_production_and_metrics_on_an_internal_port(
    db: Session, monkeypatch: pytest.MonkeyPatch
):
    settings = get_settings()
    monkeypatch.setattr(settings, "DOCS_ENABLED", False)
    monkeypatch.setattr(settings, "METRICS_PORT", 19555)
    client = TestClient(build_app(ServerName.GATEWAY, routers=[gateway_router]))

    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 404
    assert client.get("/metrics").status_code == 404
    assert client.get("/health").status_code == 200


_CHILD = """
from jivapay.utils.metrics import RATE_LIMIT_STORAGE_ERRORS_TOTAL
RATE_LIMIT_STORAGE_ERRORS_TOTAL.labels("multiproc-probe").inc({n})
"""


def test_metrics_are_summed_over_worker_processes(tmp_path: Path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", _CHILD.format(n=n)], env=env, check=True)
    reader = "from jivapay.utils.metrics import render_latest\nprint(render_latest()[0].decode())"

    out = subprocess.run(
        [sys.executable, "-c", reader], env=env, check=True, capture_output=True, text=True
    ).stdout

    assert 'rate_limit_storage_errors_total{server="multiproc-probe"} 7.0' in out
