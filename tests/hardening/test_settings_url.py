"""PUT /admin/settings/EXCHANGE_RATE_SOURCE_URL with a malformed bracketed host must be a
422 that writes nothing, not a 500 (urllib's ValueError escapes the typed validation)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from jivapay.enums import Role
from jivapay.servers.app_factory import build_app
from tests.api.admin_helpers import bearer, make_staff, row_counts


@pytest.mark.parametrize("value", ["http://[::1", "http://[zz]/rates", "http://a\\ud800b/"])
def test_malformed_rate_source_url_is_422_and_writes_nothing(db, value) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import ROUTERS

    admin = make_staff(db, Role.ADMIN, ["settings:*"])
    client = TestClient(build_app(Role.ADMIN, routers=ROUTERS), raise_server_exceptions=False)
    before = row_counts(db)

    response = client.put(
        "/admin/settings/EXCHANGE_RATE_SOURCE_URL",
        content=('{"value": "' + value + '"}').encode(),
        headers={**bearer(admin), "content-type": "application/json"},
    )

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    after = row_counts(db)
    assert after == before
