"""The demo webhook inbox: verifies deliveries against the demo stores' secrets, lists them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import MerchantStore
from jivapay.seeds import run_seed
from jivapay.seeds.demo import point_demo_stores_at
from jivapay.servers.webhook_inbox import INBOX_FILE, build_inbox_app
from jivapay.services.webhook_signing import signed_headers


def test_inbox_lists_deliveries_with_their_verified_signatures(db: Session, tmp_path: Path) -> None:
    report = run_seed(db, demo=True)
    assert report.demo is not None
    store = report.demo.stores[0]
    assert point_demo_stores_at(db, "http://127.0.0.1:8007/callbacks") == len(report.demo.stores)
    urls = db.scalars(select(MerchantStore.callback_url)).all()
    assert set(urls) == {"http://127.0.0.1:8007/callbacks"}

    client = TestClient(build_inbox_app(tmp_path))
    event = {"id": "evt_1", "type": "order.paid", "data": {"order_id": "ord_1", "status": "paid"}}
    body = json.dumps(event).encode()
    good = signed_headers(
        store.callback_secret, msg_id="evt_1", timestamp=int(time.time()), body=body
    )
    assert client.post("/callbacks", content=body, headers=good).status_code == 200
    forged = signed_headers(
        "whsec_" + "A" * 32, msg_id="evt_2", timestamp=int(time.time()), body=body
    )
    assert (
        client.post("/callbacks", content=b"<script>x</script>", headers=forged).status_code == 200
    )

    newest, oldest = client.get("/callbacks.json").json()
    assert (oldest["store"], oldest["signature"]) == (store.name, "valid")
    assert (oldest["type"], oldest["order_id"], oldest["status"]) == ("order.paid", "ord_1", "paid")
    assert newest["store"] is None and newest["signature"].startswith("invalid")
    assert len((tmp_path / INBOX_FILE).read_text().splitlines()) == 2  # kept across restarts

    page = client.get("/")
    assert page.status_code == 200 and "order.paid" in page.text
    assert "<script>x</script>" not in page.text and "&lt;script&gt;" in page.text
