"""The authorisation matrix of the merchant, trader and teamlead servers, enumerated from the apps
themselves, so a route added later is covered without editing this test.

For every route (except the public ones: health, readiness, metrics, docs, OpenAPI, login) and
every caller (merchant, trader, teamlead, support, admin, a garbage token, no token):
  - a caller of another role, or none, gets 401/403 as problem+json, never data;
  - the server's own role, given a path id of another owner's object (or one that does not
    exist), gets 404 (422 only where the request could not be filled generically);
  - the server's own role on a route without path ids is not refused (the tokens are real).
Path parameters are filled by name (and the path segment before them) from objects of a second,
foreign world; unknown names fall back to an id that does not exist. Bodies and required query
parameters are generated from the route's own OpenAPI schema. Every violation is collected and
reported together; a 2xx to a wrong caller is called out first.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select

from jivapay.database.models import CallbackDelivery, OrderHistory, Trader
from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.servers.exception_handlers import PROBLEM_JSON
from jivapay.services.order_processor import process_incoming_order
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_staff,
    make_store,
    make_trader,
)

D = Decimal
SERVERS = (Role.MERCHANT, Role.TRADER, Role.TEAMLEAD)
CALLERS = (*Role, "garbage", "none")
_PUBLIC_PATHS = {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc"}
_PUBLIC_SUFFIXES = ("/auth/token", "/auth/login", "/docs/oauth2-redirect")
MISSING_ID = "999999999"
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


def _app(role: Role) -> FastAPI:
    app: FastAPI = importlib.import_module(f"jivapay.servers.{role.value}.server").app
    return app


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every non-public route the app serves."""
    found: list[tuple[str, str]] = []
    for context in iter_route_contexts(app.routes):
        path = context.path
        if path in _PUBLIC_PATHS or path.endswith(_PUBLIC_SUFFIXES) or path.startswith("/docs"):
            continue
        for method in sorted((context.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, path))
    return found


# --------------------------------------------------------------------------- request generation


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _example(schema: dict[str, Any], spec: dict[str, Any], depth: int = 0) -> Any:
    """A small value valid for `schema` where it can be (required fields only)."""
    schema = _resolve(schema, spec)
    if depth > 6:
        return None
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, spec).get("type") != "null"]
            return _example(options[0], spec, depth + 1) if options else None
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {
            name: _example(props[name], spec, depth + 1)
            for name in schema.get("required", [])
            if name in props
        }
    if kind == "array":
        return []
    if kind == "boolean":
        return False
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2026-01-01T00:00:00Z"
        if fmt == "date":
            return "2026-01-01"
        if fmt == "email":
            return "matrix@example.com"
        if fmt in ("uri", "url"):
            return "https://example.com/callback"
        if "pattern" in schema and "0-9" in schema["pattern"]:
            return "1.00"
        return "x" * max(1, int(schema.get("minLength", 1)))
    return None


@dataclass(frozen=True)
class Filled:
    body: Any
    query: dict[str, Any]
    generic: bool  # a body, a query or an unknown path parameter was made up


def _fill_request(spec: dict[str, Any], method: str, path: str) -> Filled:
    operation = spec["paths"].get(path, {}).get(method.lower(), {})
    query: dict[str, Any] = {}
    for param in operation.get("parameters", []):
        if param.get("in") == "query" and param.get("required"):
            query[param["name"]] = _example(param.get("schema", {}), spec)
    content = operation.get("requestBody", {}).get("content", {})
    body = None
    if "application/json" in content:
        body = _example(content["application/json"].get("schema", {}), spec)
    return Filled(body=body, query=query, generic=bool(query) or body is not None)


# --------------------------------------------------------------------------- the two worlds


@dataclass(frozen=True)
class Side:
    merchant_user: int
    trader_user: int
    teamlead_user: int
    store_id: int
    trader_id: int
    requisite_id: int
    order_public_id: str
    callback_id: int


def _side(db) -> Side:  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("100"))
    world = make_store(db, ref, balance=D("1000"))
    lead = make_staff(db, Role.TEAMLEAD)
    trader = make_trader(db, ref, team_lead_id=lead.id)
    req = make_requisite(db, trader, ref)
    result = process_incoming_order(make_incoming(db, world, ref).id)
    order = db.get(OrderHistory, result.order_id)
    assert order is not None and order.trader_id == trader.id
    callback = db.scalars(
        select(CallbackDelivery).where(CallbackDelivery.store_id == world.store.id)
    ).first()
    assert callback is not None
    return Side(
        merchant_user=world.merchant.user_id,
        trader_user=db.get(Trader, trader.id).user_id,
        teamlead_user=lead.user_id,
        store_id=world.store.id,
        trader_id=trader.id,
        requisite_id=req.id,
        order_public_id=order.public_id,
        callback_id=callback.id,
    )


def _foreign_value(foreign: Side, segment: str, name: str) -> str | None:
    """The foreign world's object for a path parameter, by (preceding segment, name) or name."""
    by_segment = {
        ("stores", "id"): foreign.store_id,
        ("traders", "id"): foreign.trader_id,
        ("requisites", "id"): foreign.requisite_id,
        ("callbacks", "id"): foreign.callback_id,
        ("orders", "id"): foreign.order_public_id,
    }
    by_name = {
        "store_id": foreign.store_id,
        "trader_id": foreign.trader_id,
        "requisite_id": foreign.requisite_id,
        "callback_id": foreign.callback_id,
        "delivery_id": foreign.callback_id,
        "order_id": foreign.order_public_id,
        "public_id": foreign.order_public_id,
    }
    value = by_segment.get((segment, name), by_name.get(name))
    return None if value is None else str(value)


def _fill_path(path: str, foreign: Side | None) -> tuple[str, bool]:
    """`path` with its parameters filled (foreign objects, or missing ones with `foreign=None`);
    the flag says whether an unknown parameter name fell back to a missing id."""
    unknown = False
    parts = path.split("/")
    for i, part in enumerate(parts):
        match = _PARAM.fullmatch(part)
        if not match:
            continue
        name = match.group(1)
        value = _foreign_value(foreign, parts[i - 1], name) if foreign is not None else None
        if value is None:
            unknown = unknown or (foreign is not None)
            value = "ord_missing_0000000000" if name.endswith("order_id") else MISSING_ID
        parts[i] = value
    return "/".join(parts), unknown


# --------------------------------------------------------------------------- the matrix


def _headers(caller: Role | str, own: Side, staff: dict[Role, int]) -> dict[str, str]:
    users = {
        Role.MERCHANT: own.merchant_user,
        Role.TRADER: own.trader_user,
        Role.TEAMLEAD: own.teamlead_user,
        **staff,
    }
    if caller == "none":
        return {}
    if caller == "garbage":
        return {"Authorization": "Bearer not.a.token"}
    role = Role(caller)
    return {"Authorization": f"Bearer {create_access_token(users[role], role)}"}


@pytest.mark.parametrize("server", SERVERS, ids=lambda r: r.value)
def test_every_route_refuses_other_roles_and_foreign_objects(db, server: Role) -> None:  # type: ignore[no-untyped-def]
    own, foreign = _side(db), _side(db)
    staff = {
        Role.SUPPORT: make_staff(db, Role.SUPPORT).user_id,
        Role.ADMIN: make_staff(db, Role.ADMIN).user_id,
    }
    app = _app(server)
    client = TestClient(app, raise_server_exceptions=False)
    spec = app.openapi()
    routes = _routes(app)
    assert (("GET", f"/{server.value}/me")) in routes, "route enumeration found nothing"
    leaks: list[str] = []
    problems: list[str] = []

    for method, path in routes:
        filled = _fill_request(spec, method, path)
        has_params = bool(_PARAM.search(path))
        # Wrong callers: any path values will do, the role guard answers first.
        url, _ = _fill_path(path, foreign)
        for caller in CALLERS:
            if caller == server:
                continue
            r = client.request(
                method,
                url,
                headers=_headers(caller, own, staff),
                json=filled.body,
                params=filled.query,
            )
            where = f"{method} {path} as {caller}: {r.status_code}"
            if r.status_code < 300:
                leaks.append(f"{where} {r.text[:200]}")
            elif r.status_code not in (401, 403):
                problems.append(f"{where} (expected 401/403)")
            elif not r.headers.get("content-type", "").startswith(PROBLEM_JSON):
                problems.append(f"{where} not problem+json")
            if caller in ("none", "garbage") and r.status_code != 401:
                problems.append(f"{where} (expected 401 without a valid token)")

        own_headers = _headers(server, own, staff)
        if not has_params:
            r = client.request(
                method, path, headers=own_headers, json=filled.body, params=filled.query
            )
            # A made-up current password is the one 401 that proves the token was accepted.
            wrong_password = r.status_code == 401 and '"wrong_password"' in r.text
            if (r.status_code in (401, 403) and not wrong_password) or r.status_code >= 500:
                problems.append(f"{method} {path} as its own role: {r.status_code} {r.text[:200]}")
            continue
        # The right role, with another owner's object and with one that does not exist.
        for target in (foreign, None):
            url, unknown = _fill_path(path, target)
            r = client.request(
                method, url, headers=own_headers, json=filled.body, params=filled.query
            )
            kind = "foreign" if target is not None else "missing"
            where = f"{method} {url} ({path}, {kind}) as {server}: {r.status_code}"
            allowed = {404, 422} if (unknown or filled.generic or target is None) else {404}
            if r.status_code < 300:
                leaks.append(f"{where} {r.text[:200]}")
            elif r.status_code not in allowed:
                problems.append(f"{where} (expected {sorted(allowed)}) {r.text[:200]}")

    assert not leaks, (
        "ROUTES ANSWERED 2xx TO A WRONG CALLER OR FOR A FOREIGN OBJECT:\n" + "\n".join(leaks)
    )
    assert not problems, "\n".join(problems)


def test_matrix_enumeration_covers_the_teamlead_routes() -> None:
    routes = _routes(_app(Role.TEAMLEAD))
    assert ("POST", "/teamlead/traders/{id}/traffic") in routes
    assert ("GET", "/teamlead/requisites/online-stats") in routes
    assert not any(path.endswith("/auth/token") or path == "/health" for _, path in routes)
