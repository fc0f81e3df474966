"""Schemathesis (property-based tests from each server's own OpenAPI document) against all six
servers, in process over ASGI with the real PostgreSQL and Redis: every operation, a bounded number of
generated requests each, checked for server errors and for answers the document does not describe.

Checks run: no server error, every status documented, every content type documented (errors are
`application/problem+json` `Problem`s, see `jivapay/api_routers/responses.py`), and every body
matching its schema. Requests are authenticated by a thin ASGI wrapper: gateway requests are signed with a real store's
keys after the body is known (a "hook" at the transport), role servers get a bearer token of a real
user of their role. The `ignored_auth` check is therefore excluded (the wrapper always adds
credentials); authentication itself is covered by tests/api/test_auth.py.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jivapay.enums import Role
from jivapay.security import compute_signature, create_access_token
from jivapay.servers.app_factory import ServerName
from jivapay.utils.config_loader import invalidate_cache, set_config_value
from tests.factories import StoreWorld, make_bank_method, make_reference, make_store, make_user

MAX_EXAMPLES = 4
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Not yet clean, so not run: positive_data_acceptance and negative_data_rejection (constraints such
# as "amount > 0", "exactly one of two amounts" or the required Idempotency-Key are enforced but not
# all declared in the documents yet), response_headers_conformance, missing_required_header.


class SignedGateway:
    """Adds a valid store signature to every request (the body is read first, then replayed)."""

    def __init__(self, app: ASGIApp, store: StoreWorld) -> None:
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope["path"] + (f"?{query}" if query else "")
        ts = str(int(time.time()))
        signature = compute_signature(self.store.private_key, ts, scope["method"], path, body)
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k.lower() not in (b"x-api-key", b"x-timestamp", b"x-signature")
        ]
        headers += [
            (b"x-api-key", self.store.public_key.encode()),
            (b"x-timestamp", ts.encode()),
            (b"x-signature", signature.encode()),
        ]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


class Bearer:
    """Adds `Authorization: Bearer <token>` to every request."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
            headers.append((b"authorization", f"Bearer {self.token}".encode()))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def _wrapped_app(server: str, db: Session) -> ASGIApp:
    for key in ("RATE_LIMIT_DEFAULT", "RATE_LIMIT_GATEWAY", "RATE_LIMIT_GATEWAY_INIT"):
        set_config_value(db, key, "1000000/minute")
    set_config_value(db, "RATE_LIMIT_LOGIN", "1000000/minute")
    app = importlib.import_module(f"jivapay.servers.{server}.server").app
    app.openapi_schema = None
    if server == ServerName.GATEWAY:
        ref = make_reference(db)
        make_bank_method(db, ref)
        wrapped: ASGIApp = SignedGateway(app, make_store(db, ref))
    else:
        user = make_user(db, Role(server))
        wrapped = Bearer(app, create_access_token(user.id, Role(server)))
    db.commit()
    invalidate_cache()
    return wrapped


def _run_operation(operation: Any) -> str | None:
    """Generate and check up to MAX_EXAMPLES requests of one operation; the failure, if any."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    try:
        check()
    except Exception as exc:
        return f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}"
    return None


@pytest.mark.parametrize("server", [s.value for s in ServerName])
def test_every_operation_answers_as_documented(db: Session, server: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", _wrapped_app(server, db))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations

    failures = [f for f in map(_run_operation, operations) if f is not None]

    assert not failures, "\n\n".join(failures)
