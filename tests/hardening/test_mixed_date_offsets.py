"""A date range with one naive and one offset-aware end must be 422 (or served), never a
500 from Python's "can't compare offset-naive and offset-aware datetimes"."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.servers.app_factory import build_app
from tests.api.merchant_support import bearer, make_merchant
from tests.factories import make_staff

MIXED = "{a}_from=2026-01-01T00:00:00&{a}_to=2026-02-01T00:00:00Z"


def _ok(r) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("path", ["/merchant/orders", "/merchant/balances/history"])
def test_merchant(db, path) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.merchant.server import ROUTERS

    me = make_merchant(db)
    c = TestClient(build_app(Role.MERCHANT, routers=ROUTERS), raise_server_exceptions=False)
    _ok(c.get(f"{path}?{MIXED.format(a='created')}", headers=bearer(me.user_id, Role.MERCHANT)))


def test_teamlead_orders(db) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.teamlead.server import ROUTERS

    lead = make_staff(db, Role.TEAMLEAD)
    c = TestClient(build_app(Role.TEAMLEAD, routers=ROUTERS), raise_server_exceptions=False)
    h = {"Authorization": f"Bearer {create_access_token(lead.user_id, Role.TEAMLEAD)}"}
    _ok(c.get(f"/teamlead/orders?{MIXED.format(a='created')}", headers=h))


def test_admin_audit_logs(db) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import ROUTERS

    admin = make_staff(db, Role.ADMIN)
    c = TestClient(build_app(Role.ADMIN, routers=ROUTERS), raise_server_exceptions=False)
    h = {"Authorization": f"Bearer {create_access_token(admin.user_id, Role.ADMIN)}"}
    _ok(c.get(f"/admin/audit-logs?{MIXED.format(a='date')}", headers=h))


@pytest.mark.parametrize("path", ["/admin/orders", "/admin/incoming-orders", "/admin/callbacks"])
def test_staff_lists(db, path) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import ROUTERS

    admin = make_staff(db, Role.ADMIN)
    c = TestClient(build_app(Role.ADMIN, routers=ROUTERS), raise_server_exceptions=False)
    h = {"Authorization": f"Bearer {create_access_token(admin.user_id, Role.ADMIN)}"}
    _ok(c.get(f"{path}?{MIXED.format(a='created')}", headers=h))
