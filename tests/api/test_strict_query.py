"""Every role route refuses a query parameter it does not declare (422), on every role server,
enumerated from the apps themselves: a mistyped filter must never answer a list that ignored it."""

from __future__ import annotations

import importlib

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from jivapay.database.models import Trader
from jivapay.enums import Role
from jivapay.security import create_access_token
from tests.factories import make_reference, make_staff, make_store, make_trader

UNKNOWN = "no_such_filter"


def _app(role: Role) -> FastAPI:
    app: FastAPI = importlib.import_module(f"jivapay.servers.{role.value}.server").app
    return app


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_an_unknown_query_parameter_is_422_on_every_list_and_read(db, role: Role) -> None:  # type: ignore[no-untyped-def]
    # No grants: the query is checked with the role, before any permission or handler runs.
    if role in (Role.ADMIN, Role.SUPPORT, Role.TEAMLEAD):
        user_id = make_staff(db, role, permissions=[]).user_id
    elif role == Role.MERCHANT:
        user_id = make_store(db, make_reference(db)).merchant.user_id
    else:
        user_id = db.get(Trader, make_trader(db, make_reference(db)).id).user_id
    headers = {"Authorization": f"Bearer {create_access_token(user_id, role)}"}
    app = _app(role)
    client = TestClient(app)
    paths = sorted(
        context.path
        for context in iter_route_contexts(app.routes)
        if "GET" in (context.methods or ())
        and context.path.startswith(f"/{role.value}/")
        and "{" not in context.path
        and not context.path.endswith(("/me", "/auth/token", "/auth/login"))
    )
    assert len(paths) >= 3, paths
    answers = {path: client.get(path, params={UNKNOWN: "1"}, headers=headers) for path in paths}
    ignored = {path: r.status_code for path, r in answers.items() if r.status_code != 422}
    assert ignored == {}
    for r in answers.values():
        assert r.json()["errors"] == [
            {"loc": ["query", UNKNOWN], "msg": "Unknown query parameter", "type": "extra_forbidden"}
        ]
