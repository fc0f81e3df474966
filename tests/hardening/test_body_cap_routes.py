"""The multipart body cap is for the routes that take files: a body merely labelled multipart gets
the JSON cap elsewhere (413 before anything reads it, unauthenticated or not)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from jivapay.config import get_settings
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

MULTIPART = "multipart/form-data; boundary=xyz"


def _body() -> bytes:
    size = get_settings().MAX_JSON_BODY_BYTES * 3
    return (
        b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
        + b"a" * size
        + b"\r\n--xyz--\r\n"
    )


def test_gateway_intake_multipart_label_gets_the_file_cap(db, client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/gateway/payin/init", content=_body(), headers={"content-type": MULTIPART})
    assert r.status_code == 413


def test_merchant_json_route_multipart_label_gets_the_file_cap(db) -> None:  # type: ignore[no-untyped-def]
    from jivapay.servers.merchant.server import ROUTERS

    c = TestClient(build_app(Role.MERCHANT, routers=ROUTERS), raise_server_exceptions=False)
    r = c.post("/merchant/stores", content=_body(), headers={"content-type": MULTIPART})
    assert r.status_code == 413


def _every_app():  # type: ignore[no-untyped-def]
    from jivapay.servers.admin.server import app as admin
    from jivapay.servers.gateway.server import app as gateway
    from jivapay.servers.merchant.server import app as merchant
    from jivapay.servers.support.server import app as support
    from jivapay.servers.teamlead.server import app as teamlead
    from jivapay.servers.trader.server import app as trader

    return (admin, gateway, merchant, support, teamlead, trader)


def test_the_file_cap_covers_exactly_the_routes_that_take_files() -> None:
    """`_FILE_ROUTES` is written by hand: every route whose OpenAPI body is multipart matches it,
    and no other route does (a file route it misses would refuse receipts over the JSON cap)."""
    import re

    from jivapay.middleware.input_guard import _FILE_ROUTES

    takes_files, other = set(), set()
    for app in _every_app():
        for path, operations in app.openapi()["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", "ord_x1", path)
            for operation in operations.values():
                content = operation.get("requestBody", {}).get("content", {})
                (takes_files if "multipart/form-data" in content else other).add(concrete)
    assert takes_files, "no route takes files: the OpenAPI documents changed shape"
    assert sorted(p for p in takes_files if not _FILE_ROUTES.match(p)) == []
    assert sorted(p for p in other - takes_files if _FILE_ROUTES.match(p)) == []
