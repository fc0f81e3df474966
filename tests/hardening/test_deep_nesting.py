"""A deeply nested JSON body (a few KB) must be a 422, not a 500 + critical audit row."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from jivapay.enums import Role
from jivapay.servers.app_factory import build_app
from tests.api.merchant_support import bearer, make_merchant
from tests.factories import make_reference
from tests.hardening.test_inputs import _payin, _send, critical_errors

DEPTH = 450


def test_gateway_intake_deeply_nested_body_is_422(db, client, world):  # type: ignore[no-untyped-def]
    ref, store = world
    nested = "[" * DEPTH + "]" * DEPTH
    raw = json.dumps(_payin(ref, customer_id="X")).replace('"X"', nested).encode()
    before = critical_errors(db)

    response = _send(client, store, "POST", "/gateway/payin/init", raw)

    assert response.status_code == 422
    assert critical_errors(db) == before


def test_merchant_store_create_deeply_nested_body_is_422(db):  # type: ignore[no-untyped-def]
    from jivapay.servers.merchant.server import ROUTERS

    make_reference(db)
    me = make_merchant(db)
    c = TestClient(build_app(Role.MERCHANT, routers=ROUTERS), raise_server_exceptions=False)
    nested = "[" * DEPTH + "]" * DEPTH
    raw = ('{"store_name": ' + nested + "}").encode()
    before = critical_errors(db)

    response = c.post(
        "/merchant/stores",
        content=raw,
        headers={**bearer(me.user_id, Role.MERCHANT), "content-type": "application/json"},
    )

    assert response.status_code == 422
    assert critical_errors(db) == before
