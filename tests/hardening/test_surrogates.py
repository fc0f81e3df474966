"""A lone UTF-16 surrogate escape ("\\ud800") in a JSON string must be a 422 that writes
nothing, not a 500 (psycopg cannot encode it: UnicodeEncodeError, not a DBAPI DataError)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from jivapay.enums import Role
from jivapay.servers.app_factory import build_app
from tests.api.merchant_support import bearer, make_merchant
from tests.factories import make_reference
from tests.hardening.test_inputs import _orders, _payin, _send, critical_errors

LONE = "a\\ud800b"  # the JSON escape of a lone surrogate, valid JSON text


def test_gateway_intake_lone_surrogate_is_422(db, client, world):  # type: ignore[no-untyped-def]
    ref, store = world
    raw = json.dumps(_payin(ref, customer_id="X")).replace('"X"', f'"{LONE}"').encode()
    before, crit = _orders(db), critical_errors(db)

    response = _send(client, store, "POST", "/gateway/payin/init", raw)

    assert response.status_code == 422
    assert _orders(db) == before
    assert critical_errors(db) == crit


def test_merchant_store_create_lone_surrogate_is_422(db):  # type: ignore[no-untyped-def]
    from jivapay.servers.merchant.server import ROUTERS

    ref = make_reference(db)
    me = make_merchant(db)
    c = TestClient(build_app(Role.MERCHANT, routers=ROUTERS), raise_server_exceptions=False)
    body = json.dumps(
        {
            "store_name": "X",
            "fiat_currency": ref.fiat.code,
            "crypto_currency": ref.crypto.code,
            "lower_limit": "100.00",
            "upper_limit": "50000",
        }
    ).replace('"X"', f'"{LONE}"')
    crit = critical_errors(db)

    response = c.post(
        "/merchant/stores",
        content=body.encode(),
        headers={**bearer(me.user_id, Role.MERCHANT), "content-type": "application/json"},
    )

    assert response.status_code == 422
    assert critical_errors(db) == crit
