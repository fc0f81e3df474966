"""Authorisation matrix of the admin identity, configuration, reference, log and GDPR routes: the
routes are enumerated from the admin app (a new route in one of these groups without a row here
fails; the other groups' routes are covered by `test_staff_authorization_matrix.py`), every staff
template is tried on every route and gets exactly what its grants allow (403 otherwise), other
roles are refused by the server, and escalation attempts are refused."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jivapay.database.models import Merchant, User
from jivapay.enums import Role
from jivapay.permissions import ROLE_TEMPLATES, check_permission
from tests.api.admin_helpers import admin_client, bearer, make_staff, row_counts
from tests.factories import make_user

# (method, path template) -> the permission the route needs for the targets used below.
# Routes whose permission depends on the target role are listed with the role of their target.
MATRIX: dict[tuple[str, str], str] = {
    ("GET", "/admin/permissions"): "users:view:all",
    ("POST", "/admin/users"): "users:manage:merchant",
    ("GET", "/admin/users"): "users:view:all",
    ("GET", "/admin/users/stats"): "users:view:all",
    ("GET", "/admin/users/{user_id}"): "users:view:all",
    ("PATCH", "/admin/users/{user_id}"): "users:manage:merchant",
    ("POST", "/admin/users/{user_id}/activate"): "users:deactivate:all",
    ("POST", "/admin/users/{user_id}/deactivate"): "users:deactivate:all",
    ("POST", "/admin/users/{user_id}/password"): "users:manage:merchant",
    ("GET", "/admin/users/{user_id}/permissions"): "users:view:all",
    ("PUT", "/admin/users/{user_id}/permissions"): "users:manage:support",
    ("GET", "/admin/settings"): "settings:view:all",
    ("PUT", "/admin/settings/{key}"): "settings:edit:all",
    ("DELETE", "/admin/settings/{key}"): "settings:edit:all",
    ("GET", "/admin/reference/{kind}"): "reference:view:all",
    ("POST", "/admin/reference/{kind}"): "reference:edit:all",
    ("PATCH", "/admin/reference/{kind}/{row_id}"): "reference:edit:all",
    ("GET", "/admin/exchange-rates"): "reference:view:all",
    ("PUT", "/admin/exchange-rates/{crypto}/{fiat}"): "exchange_rates:edit:all",
    ("POST", "/admin/exchange-rates/refresh"): "exchange_rates:edit:all",
    ("GET", "/admin/audit-logs"): "audit_logs:view:all",
    ("GET", "/admin/logs/critical-errors"): "audit_logs:view:all",
    ("GET", "/admin/users/{user_id}/export"): "users:export:all",
    ("POST", "/admin/users/{user_id}/anonymize"): "users:anonymize:all",
    ("POST", "/admin/customers/anonymize"): "users:anonymize:all",
    ("POST", "/admin/system/worker-ping"): "settings:view:all",
}
# Routes of the factory (login, /me) and the own-password route need no grant.
NOT_IN_MATRIX = {"/admin/auth/token", "/admin/me", "/admin/password"}


# The route groups (first segment after /admin/) this matrix owns.
GROUPS = frozenset(path.split("/")[2] for _, path in MATRIX)


def _admin_routes() -> set[tuple[str, str]]:
    """Every (method, path) the admin app serves in this matrix's groups, from its OpenAPI."""
    from jivapay.servers.admin.server import app

    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/admin/") and path not in NOT_IN_MATRIX and path.split("/")[2] in GROUPS
        for method in operations
    }


def test_matrix_covers_every_admin_route() -> None:
    served = _admin_routes()
    assert set(MATRIX) <= served, sorted(set(MATRIX) - served)  # every listed route exists
    assert served <= set(MATRIX), sorted(served - set(MATRIX))  # a new route here needs a row
    assert set(_requests(1, 2, 3, "x")) == set(MATRIX)  # and every row is exercised below
    assert {"users", "settings", "reference", "audit-logs", "logs", "customers"} <= GROUPS


def _requests(
    merchant_id: int, support_id: int, anon_id: int, unique: str
) -> dict[tuple[str, str], tuple[str, dict]]:  # type: ignore[type-arg]
    """A concrete request per route: (url, json body or {})."""
    return {
        ("GET", "/admin/permissions"): ("/admin/permissions", {}),
        ("POST", "/admin/users"): (
            "/admin/users",
            {"email": f"mx-{unique}@example.com", "password": "long-enough-1", "role": "merchant"},
        ),
        ("GET", "/admin/users"): ("/admin/users", {}),
        ("GET", "/admin/users/stats"): ("/admin/users/stats", {}),
        ("GET", "/admin/users/{user_id}"): (f"/admin/users/{merchant_id}", {}),
        ("PATCH", "/admin/users/{user_id}"): (f"/admin/users/{merchant_id}", {"company_name": "C"}),
        ("POST", "/admin/users/{user_id}/activate"): (f"/admin/users/{merchant_id}/activate", {}),
        ("POST", "/admin/users/{user_id}/deactivate"): (
            f"/admin/users/{merchant_id}/deactivate",
            {},
        ),
        ("POST", "/admin/users/{user_id}/password"): (
            f"/admin/users/{merchant_id}/password",
            {"new_password": "another-pass-1"},
        ),
        ("GET", "/admin/users/{user_id}/permissions"): (
            f"/admin/users/{support_id}/permissions",
            {},
        ),
        ("PUT", "/admin/users/{user_id}/permissions"): (
            f"/admin/users/{support_id}/permissions",
            {"permissions": []},
        ),
        ("GET", "/admin/settings"): ("/admin/settings", {}),
        ("PUT", "/admin/settings/{key}"): ("/admin/settings/RETRY_DELAY_SECONDS", {"value": 11}),
        ("DELETE", "/admin/settings/{key}"): ("/admin/settings/RETRY_DELAY_SECONDS", {}),
        ("GET", "/admin/reference/{kind}"): ("/admin/reference/banks", {}),
        ("POST", "/admin/reference/{kind}"): ("/admin/reference/countries", {}),
        ("PATCH", "/admin/reference/{kind}/{row_id}"): ("/admin/reference/countries/999999999", {}),
        ("GET", "/admin/exchange-rates"): ("/admin/exchange-rates", {}),
        ("PUT", "/admin/exchange-rates/{crypto}/{fiat}"): (
            "/admin/exchange-rates/NOPE/NOPE",
            {"buy_rate": "1", "sell_rate": "1"},
        ),
        ("POST", "/admin/exchange-rates/refresh"): ("/admin/exchange-rates/refresh", {}),
        ("GET", "/admin/audit-logs"): ("/admin/audit-logs", {}),
        ("GET", "/admin/logs/critical-errors"): ("/admin/logs/critical-errors", {}),
        ("GET", "/admin/users/{user_id}/export"): (f"/admin/users/{merchant_id}/export", {}),
        ("POST", "/admin/users/{user_id}/anonymize"): (
            f"/admin/users/{anon_id}/anonymize",
            {"reason": "matrix"},
        ),
        ("POST", "/admin/customers/anonymize"): (
            "/admin/customers/anonymize",
            {"store_id": 999999999, "customer_id": "x"},
        ),
        ("POST", "/admin/system/worker-ping"): ("/admin/system/worker-ping?timeout=0.2", {}),
    }


def _call(client: TestClient, method: str, url: str, body: dict, headers: dict) -> int:  # type: ignore[type-arg]
    kwargs = {"json": body} if method in {"POST", "PUT", "PATCH"} else {}
    return client.request(method, url, headers=headers, **kwargs).status_code  # type: ignore[arg-type]


def _merchant(db) -> User:  # type: ignore[no-untyped-def]
    user = make_user(db, Role.MERCHANT)
    db.add(Merchant(user_id=user.id))
    db.flush()
    return user


@pytest.mark.parametrize("template", sorted(ROLE_TEMPLATES))
def test_each_template_gets_exactly_what_its_grants_allow(db, template, unique) -> None:  # type: ignore[no-untyped-def]
    client = admin_client()
    actor = make_staff(db, Role.ADMIN, ROLE_TEMPLATES[template])
    merchant, anon = _merchant(db), _merchant(db)
    support = make_staff(db, Role.SUPPORT, [])
    requests = _requests(merchant.id, support.id, anon.id, unique)
    wrong = []
    for key, required in MATRIX.items():
        url, body = requests[key]
        status = _call(client, key[0], url, body, bearer(actor))
        allowed = check_permission(ROLE_TEMPLATES[template], required)
        if (allowed and status == 403) or (not allowed and status != 403) or status == 500:
            wrong.append(f"{key} -> {status} (allowed={allowed})")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("role", [Role.SUPPORT, Role.TEAMLEAD, Role.MERCHANT, Role.TRADER])
def test_other_roles_are_refused_by_the_admin_server(db, role, unique) -> None:  # type: ignore[no-untyped-def]
    client = admin_client()
    if role in (Role.SUPPORT, Role.TEAMLEAD):
        user = make_staff(db, role, ["superuser"])
    else:
        user = make_user(db, role)
    merchant = _merchant(db)
    requests = _requests(merchant.id, merchant.id, merchant.id, unique)
    before = row_counts(db)
    statuses = {
        key: _call(client, key[0], url, body, bearer(user)) for key, (url, body) in requests.items()
    }
    assert set(statuses.values()) <= {401, 403}, statuses
    assert row_counts(db) == before
    assert client.get("/admin/users").status_code == 401


def test_escalation_attempts_are_refused(db, unique) -> None:  # type: ignore[no-untyped-def]
    client = admin_client()
    full = make_staff(db, Role.ADMIN, ROLE_TEMPLATES["admin_full"])
    lead_manager = make_staff(db, Role.SUPPORT, [])  # a target
    narrow = make_staff(db, Role.ADMIN, ["users:manage:support", "orders:view:all"])
    before = row_counts(db)
    attempts = [
        # admin_full raising itself (an admin: needs users:manage:admin)
        (full, "PUT", f"/admin/users/{full.id}/permissions", {"permissions": ["superuser"]}),
        # admin_full creating an admin, or a super admin from the template
        (
            full,
            "POST",
            "/admin/users",
            {
                "email": f"a-{unique}@example.com",
                "password": "long-enough-1",
                "role": "admin",
                "template": "super_admin",
            },
        ),
        # granting a wildcard wider than one's own grant
        (
            narrow,
            "PUT",
            f"/admin/users/{lead_manager.id}/permissions",
            {"permissions": ["orders:*"]},
        ),
        (narrow, "PUT", f"/admin/users/{lead_manager.id}/permissions", {"permissions": ["*"]}),
        (
            narrow,
            "POST",
            "/admin/users",
            {
                "email": f"s-{unique}@example.com",
                "password": "long-enough-1",
                "role": "support",
                "permissions": ["users:manage:support", "users:manage:admin"],
            },
        ),
        # a template whose grants the actor lacks
        (
            narrow,
            "POST",
            "/admin/users",
            {
                "email": f"t-{unique}@example.com",
                "password": "long-enough-1",
                "role": "support",
                "template": "support_orders",
            },
        ),
    ]
    for actor, method, url, body in attempts:
        r = client.request(method, url, json=body, headers=bearer(actor))
        assert r.status_code == 403, (url, body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert row_counts(db) == before
    # What one does hold can be granted.
    r = client.put(
        f"/admin/users/{lead_manager.id}/permissions",
        json={"permissions": ["orders:view:all"]},
        headers=bearer(narrow),
    )
    assert r.status_code == 200
    assert db.scalar(select(User.is_active).where(User.id == lead_manager.id)) is True
