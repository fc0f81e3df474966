"""Statistics periods with extreme or naive dates must be 422 problem+json, never 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.servers.app_factory import build_app
from tests.api.merchant_support import bearer, make_merchant
from tests.factories import make_reference, make_staff, make_trader

QUERIES = [
    "date_to=0001-01-05T00:00:00Z",  # default start = date_to - 30 days: before year 1
    "date_from=2026-01-01T00:00:00",  # naive date_from against the aware "now"
]


def _check(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code in (200, 422), response.text  # a naive date may be read as UTC
    if response.status_code == 422:
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("query", QUERIES)
def test_merchant_statistics(db, query) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.merchant.server import ROUTERS

    me = make_merchant(db)
    c = TestClient(build_app(Role.MERCHANT, routers=ROUTERS), raise_server_exceptions=False)
    _check(c.get(f"/merchant/statistics?{query}", headers=bearer(me.user_id, Role.MERCHANT)))


@pytest.mark.parametrize("query", QUERIES)
def test_trader_statistics(db, query) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.trader.server import ROUTERS

    ref = make_reference(db)
    trader = make_trader(db, ref)
    c = TestClient(build_app(Role.TRADER, routers=ROUTERS), raise_server_exceptions=False)
    _check(c.get(f"/trader/statistics?{query}", headers=bearer(trader.user_id, Role.TRADER)))


@pytest.mark.parametrize("query", QUERIES)
def test_teamlead_statistics(db, query) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.teamlead.server import ROUTERS

    lead = make_staff(db, Role.TEAMLEAD)
    c = TestClient(build_app(Role.TEAMLEAD, routers=ROUTERS), raise_server_exceptions=False)
    h = {"Authorization": f"Bearer {create_access_token(lead.user_id, Role.TEAMLEAD)}"}
    _check(c.get(f"/teamlead/statistics?{query}", headers=h))
