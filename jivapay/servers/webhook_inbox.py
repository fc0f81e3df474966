"""The demo webhook inbox of the local stack: receives merchant callbacks and lists them.

`jivapay up` runs it (port 8007 + offset) when it seeds the demo world on a local stack and points the
demo stores' `callback_url` at `POST /callbacks`. Each delivery is checked against the demo stores'
callback secrets (read from the database, so a rotated secret is honoured), answered 200 whatever
the outcome (a demo endpoint must not make the platform retry for a bad signature), and appended to
`JIVAPAY_HOME/webhook-inbox.jsonl`. `GET /` is a page of the latest deliveries with their verdicts,
`GET /callbacks.json` the same as JSON. A development tool: never run it in production.
"""

from __future__ import annotations

import html
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from jivapay.services import webhook_signing

INBOX_FILE = "webhook-inbox.jsonl"
PAGE_SIZE = 100
_BODY_PREVIEW = 4000


def _demo_secrets() -> list[tuple[str, str]]:
    """(store name, callback secret) of every demo store, read now."""
    from jivapay.database.utils import read_session
    from jivapay.seeds.demo import existing_demo_credentials

    with read_session() as session:
        stores = existing_demo_credentials(session).stores
    return [(store.name, store.callback_secret) for store in stores]


def _verdict(headers: dict[str, str], body: bytes) -> tuple[str | None, str]:
    """(the store whose secret signed it, "valid" / why not)."""
    msg_id = headers.get(webhook_signing.HEADER_ID.lower(), "")
    timestamp = headers.get(webhook_signing.HEADER_TIMESTAMP.lower(), "")
    signature = headers.get(webhook_signing.HEADER_SIGNATURE.lower(), "")
    if not (msg_id and timestamp and signature):
        return None, "invalid: webhook-id, webhook-timestamp or webhook-signature missing"
    reason = "invalid: no demo store's secret matches"
    for name, secret in _demo_secrets():
        try:
            webhook_signing.verify(
                secret, msg_id=msg_id, timestamp=timestamp, signature=signature, body=body
            )
        except webhook_signing.WebhookVerificationError as exc:
            if "timestamp" in str(exc):
                return None, f"invalid: {exc}"
            continue
        return name, "valid"
    return None, reason


def build_inbox_app(home: Path) -> FastAPI:
    """The inbox app; deliveries are kept in `home/webhook-inbox.jsonl`."""
    path = Path(home) / INBOX_FILE
    lock = threading.Lock()
    app = FastAPI(title="JivaPay demo webhook inbox", docs_url=None, redoc_url=None)

    def entries() -> list[dict[str, Any]]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()[-PAGE_SIZE:]
        except OSError:
            return []
        found = []
        for line in reversed(lines):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "server": "webhook-inbox"}

    def record(headers: dict[str, str], body: bytes) -> None:
        store, verdict = _verdict(headers, body)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        event: dict[str, Any] = payload if isinstance(payload, dict) else {}
        found = event.get("data")
        data: dict[str, Any] = found if isinstance(found, dict) else {}
        entry = {
            "received_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "webhook_id": headers.get(webhook_signing.HEADER_ID),
            "store": store,
            "signature": verdict,
            "type": event.get("type"),
            "order_id": data.get("order_id"),
            "status": data.get("status"),
            "body": body[:_BODY_PREVIEW].decode("utf-8", errors="replace"),
        }
        with lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    @app.post("/callbacks")
    async def receive(request: Request) -> dict[str, bool]:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        await run_in_threadpool(record, headers, body)
        return {"received": True}

    @app.get("/callbacks.json")
    def listed() -> list[dict[str, Any]]:
        return entries()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(e.get(k) or ''))}</td>"
                for k in ("received_at", "store", "type", "order_id", "status", "signature")
            )
            + f"<td><details><summary>body</summary><pre>{html.escape(e.get('body') or '')}"
            "</pre></details></td></tr>"
            for e in entries()
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='5'><title>JivaPay webhook inbox</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px 8px;text-align:left;"
            "vertical-align:top}tr:nth-child(even){background:#f4f4f4}</style></head><body>"
            "<h1>Demo webhook inbox</h1><p>Merchant callbacks received by the demo stores, "
            f"newest first (last {PAGE_SIZE}); the page refreshes every 5 s.</p><table><tr>"
            "<th>received</th><th>store</th><th>type</th><th>order</th><th>status</th>"
            f"<th>signature</th><th></th></tr>{rows}</table></body></html>"
        )

    return app
