"""Ids in bodies beyond BIGINT (no `le=` bound) must be 422, never 500."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from jivapay.enums import Role
from jivapay.servers.app_factory import build_app
from tests.api.admin_helpers import bearer, make_staff, row_counts
from tests.factories import make_reference

BIG = 2**70


def _cases(ref):  # type: ignore[no-untyped-def]
    return {
        "adjust": (
            "/admin/balances/adjust",
            {
                "account": "store",
                "account_id": BIG,
                "crypto_currency": ref.crypto.code,
                "amount": "1",
                "reason": "x",
            },
        ),
        "anonymize": ("/admin/customers/anonymize", {"store_id": BIG, "customer_id": "c"}),
        "fiat": (
            "/admin/reference/fiat-currencies",
            {"code": "ZZZ", "name": "Z", "country_id": BIG},
        ),
        "bankmethod": (
            "/admin/reference/bank-methods",
            {"fiat_currency_id": BIG, "bank_id": BIG, "payment_method_id": BIG},
        ),
        "user_tz": (
            "/admin/users",
            {
                "email": f"{uuid.uuid4().hex[:8]}@ex.com",
                "password": "Str0ng-pass-123456",
                "role": "trader",
                "time_zone_id": BIG,
            },
        ),
        "user_lead": (
            "/admin/users",
            {
                "email": f"{uuid.uuid4().hex[:8]}@ex.com",
                "password": "Str0ng-pass-123456",
                "role": "trader",
                "team_lead_id": BIG,
            },
        ),
    }


@pytest.mark.parametrize(
    "case", ["adjust", "anonymize", "fiat", "bankmethod", "user_tz", "user_lead"]
)
def test_big_body_ids(db, case) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import ROUTERS

    ref = make_reference(db)
    admin = make_staff(db, Role.ADMIN, ["*"])
    client = TestClient(build_app(Role.ADMIN, routers=ROUTERS), raise_server_exceptions=False)
    path, body = _cases(ref)[case]
    before = row_counts(db)
    r = client.post(path, json=body, headers={**bearer(admin), "Idempotency-Key": uuid.uuid4().hex})
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert row_counts(db) == before
