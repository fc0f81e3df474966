"""Test helpers for merchant callbacks: a real HTTP receiver on 127.0.0.1 (http.server in a
thread) that records requests and answers from a script, an independent Standard Webhooks check (what
a merchant writes, deliberately not `jivapay.services.webhook_signing`), and builders of a store with
a callback URL and of delivery rows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy.orm import Session

from jivapay.database.models import CallbackDelivery, IncomingOrder, MerchantStore
from jivapay.security import generate_callback_secret
from jivapay.services.order_events import status_change, write_status_change
from tests.factories import StoreWorld, make_incoming, make_reference, make_store


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 answering from `script` (then `default`), recording requests."""

    port: int = 0
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    default: tuple[int, dict[str, str], bytes] = (200, {}, b"ok")
    requests: list[Received] = field(default_factory=list)
    truncated: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/jivapay"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (a chaos test kills workers): a merchant's
                    # server discards a truncated body, so it is not a delivery.
                    with receiver._lock:
                        receiver.truncated += 1
                    self.close_connection = True
                    return
                with receiver._lock:
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.time(),
                        )
                    )
                    status, headers, answer = (
                        receiver.script.pop(0) if receiver.script else receiver.default
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def free_port() -> int:
    """A port nothing listens on (the receiver is 'down' there until started)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def verify_standard_webhook(
    secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None
) -> bool:
    """An independent Standard Webhooks check (what a merchant writes), not the module under test.

    `now` is when the request arrived (default: now), for checking recorded requests later."""
    msg_id = headers["webhook-id"]
    ts = headers["webhook-timestamp"]
    if abs((time.time() if now is None else now) - int(ts)) > 300:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        part.startswith("v1,") and hmac.compare_digest(part[3:], expected)
        for part in headers["webhook-signature"].split(" ")
    )


# --------------------------------------------------------------------------- builders


@dataclass
class World:
    store_world: StoreWorld
    secret: str
    incoming: IncomingOrder

    @property
    def store(self) -> MerchantStore:
        return self.store_world.store


def make_world(db: Session, url: str | None) -> World:
    ref = make_reference(db)
    secret = generate_callback_secret()
    sw = make_store(db, ref, callback_url=url)
    sw.store.callback_secret = secret
    db.flush()
    incoming = make_incoming(db, sw, ref, amount_fiat=Decimal("1500.00"))
    return World(sw, secret, incoming)


def new_delivery(db: Session, world: World, status: str = "failed") -> CallbackDelivery:
    change = status_change(db, incoming=world.incoming, order=None, status=status, previous="new")
    delivery_id = write_status_change(db, change)
    delivery = db.get(CallbackDelivery, delivery_id)
    assert delivery is not None
    return delivery
