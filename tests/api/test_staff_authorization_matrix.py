"""The authorization matrix of the staff servers, read from the apps themselves.

Every route of the admin and support apps (except the public ones: health, readiness, metrics,
docs, login) must be guarded by a permission dependency that names its permission
(`require_permission(...).required_permission`); only `/me` and the own-password routes are exempt.
For each staff role template, a user of the server's role holding exactly the template's grants
gets 403 where the template does not cover the route's permission and anything but 401/403 where
it does (404 or 422 for the made-up ids and empty bodies used here is fine, a 500 is not). Merchant, trader and
teamlead tokens are refused everywhere. Routes other engineers add later are covered as they come.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from jivapay.database.models import TeamLead
from jivapay.enums import Role
from jivapay.permissions import ROLE_TEMPLATES, check_permission, resolve_required
from jivapay.security import create_access_token
from tests.api.staff_support import STAFF_TEMPLATES, make_staff
from tests.factories import make_reference, make_store, make_trader, make_user

_PUBLIC = re.compile(r"/(health|ready|metrics|docs.*|openapi\.json|auth/(token|login))$")
_EXEMPT = re.compile(r"^/(admin|support)/(me|password)$")
_FAKE_INT = "987654321"
_FAKE_TEXT = "zz_made_up_id"


@dataclass(frozen=True)
class GuardedRoute:
    method: str
    path: str
    url: str
    # One permission, or several alternatives any of which admits (`require_any_permission`).
    permission: tuple[str, ...] | None
    target_id: str | None


def _permissions_of(dependant: Any) -> Iterator[tuple[str, ...]]:
    for sub in dependant.dependencies:
        permission = getattr(sub.call, "required_permission", None)
        if permission is not None:
            yield (str(permission),)
        alternatives = getattr(sub.call, "required_permissions", None)
        if alternatives is not None:
            yield tuple(str(p) for p in alternatives)
        yield from _permissions_of(sub)


def _fill(route: Any) -> tuple[str, str | None]:
    url, target = route.path, None
    for param in route.dependant.path_params:
        annotation = getattr(param.field_info, "annotation", None) or param.type_
        value = _FAKE_INT if annotation is int else _FAKE_TEXT
        # `{user_id:int}`: a typed segment, so that `/users/stats` is not an id.
        url = re.sub(r"\{" + param.name + r"(:\w+)?\}", value, url)
        target = value if param.name == "id" else target
    return url, target


def _routes(app: FastAPI) -> list[GuardedRoute]:
    found = []
    # FastAPI includes routers lazily: the routes as served (prefix and router dependencies
    # applied) are the route contexts, not `app.routes` itself.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or _PUBLIC.search(route.path or ""):
            continue
        permissions = sorted(set(_permissions_of(route.dependant)))
        assert len(permissions) <= 1, f"{route.path} checks several permissions: {permissions}"
        url, target = _fill(route)
        for method in sorted(route.methods):
            found.append(
                GuardedRoute(
                    method, route.path, url, permissions[0] if permissions else None, target
                )
            )
    return found


def _apps() -> dict[Role, FastAPI]:
    from jivapay.servers.admin.server import app as admin_app
    from jivapay.servers.support.server import app as support_app

    return {Role.ADMIN: admin_app, Role.SUPPORT: support_app}


def _request(client: TestClient, route: GuardedRoute, headers: dict[str, str]) -> int:
    kwargs: dict[str, Any] = {"headers": headers}
    if route.method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.request(route.method, route.url, **kwargs).status_code


@pytest.mark.parametrize("role", [Role.ADMIN, Role.SUPPORT])
def test_every_staff_route_names_its_permission(role: Role) -> None:
    routes = _routes(_apps()[role])
    assert any(r.path.endswith("/orders") for r in routes), "the staff routers are not mounted"
    unguarded = [f"{r.method} {r.path}" for r in routes if r.permission is None]
    unguarded = [r for r in unguarded if not _EXEMPT.match(r.split(" ", 1)[1])]
    assert unguarded == [], f"routes without a permission dependency: {unguarded}"


@pytest.mark.parametrize("role", [Role.ADMIN, Role.SUPPORT])
def test_each_template_gets_exactly_its_grants(db, role: Role) -> None:  # type: ignore[no-untyped-def]
    app = _apps()[role]
    client = TestClient(app)
    routes = [r for r in _routes(app) if r.permission is not None]
    mismatches = []
    for template in STAFF_TEMPLATES:
        grants = ROLE_TEMPLATES[template]
        headers = make_staff(db, role, grants)
        for route in routes:
            assert route.permission is not None
            covered = any(
                check_permission(grants, resolve_required(p, route.target_id))
                for p in route.permission
            )
            status = _request(client, route, headers)
            # Covered: past the guard (a made-up id or an empty body may be 404/422), never an
            # unexpected error; not covered: 403.
            ok = status not in (401, 403, 500) if covered else status == 403
            if not ok:
                mismatches.append((template, route.method, route.path, covered, status))
    assert mismatches == [], mismatches


@pytest.mark.parametrize("role", [Role.ADMIN, Role.SUPPORT])
def test_non_staff_tokens_are_refused(db, role: Role) -> None:  # type: ignore[no-untyped-def]
    app = _apps()[role]
    client = TestClient(app)
    ref = make_reference(db)
    merchant = make_store(db, ref).merchant
    trader = make_trader(db, ref)
    lead_user = make_user(db, Role.TEAMLEAD)
    db.add(TeamLead(user_id=lead_user.id, granted_permissions=["superuser"]))
    db.flush()
    other_staff = Role.SUPPORT if role == Role.ADMIN else Role.ADMIN
    tokens = {
        "merchant": create_access_token(merchant.user_id, Role.MERCHANT),
        "trader": create_access_token(trader.user_id, Role.TRADER),
        "teamlead": create_access_token(lead_user.id, Role.TEAMLEAD),
        "other staff": make_staff(db, other_staff, ["superuser"])["Authorization"].split()[1],
        "no token": "",
    }
    leaks = []
    for route in _routes(app):
        for who, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            status = _request(client, route, headers)
            # An IP that keeps failing authentication is blocked (429): a refusal too.
            refused = (401, 403, 429) if who == "no token" else (401, 403)
            if status not in refused:
                leaks.append((who, route.method, route.path, status))
    assert leaks == [], leaks
