"""End to end over HTTP: a new deployment run from the admin API alone. After the seed (the super
admin and defaults), the super admin signs in, sets the settings, maintains reference data and
rates, creates the people (teamlead, trader, merchant, support) who sign in on their own servers,
reads the logs, and answers a data-subject request (export, then anonymise)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from jivapay.config import get_settings
from jivapay.database.utils import atomic_transaction
from jivapay.enums import Role
from jivapay.seeds import run_seed
from jivapay.servers.app_factory import build_app
from jivapay.services.reconciliation import reconcile

pytestmark = pytest.mark.slow


def _server(role: Role) -> TestClient:
    from importlib import import_module

    routers = import_module(f"jivapay.servers.{role.value}.server").ROUTERS
    return TestClient(build_app(role, routers=routers))


def _login(client: TestClient, role: Role, email: str, password: str) -> dict[str, str]:
    if role == Role.SUPPORT:
        r = client.post("/support/auth/login", json={"email": email, "password": password})
    else:
        r = client.post(f"/{role.value}/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_a_new_deployment_from_the_admin_api_alone(committed_db, unique) -> None:  # type: ignore[no-untyped-def]
    with atomic_transaction() as session:
        report = run_seed(session)
    password = report.admin_password or get_settings().JIVAPAY_ADMIN_PASSWORD
    admin = _server(Role.ADMIN)
    root = _login(admin, Role.ADMIN, report.admin_email, password)

    # --- settings
    for key, value in (
        ("MAX_ORDER_RETRIES", 3),
        ("RETRY_BACKOFF_FACTOR", "1.5"),
        ("FRAUD_MANUAL_REVIEW_THRESHOLD", "250000"),
        ("RATE_LIMIT_LOGIN", "20/minute"),
        ("CALLBACK_RETRY_SCHEDULE_SECONDS", [5, 30, 120]),
    ):
        r = admin.put(f"/admin/settings/{key}", json={"value": value}, headers=root)
        assert r.status_code == 200, r.text
    settings = {s["key"]: s for s in admin.get("/admin/settings", headers=root).json()}
    assert settings["RETRY_BACKOFF_FACTOR"]["value"] == "1.5"
    assert settings["MAX_ORDER_RETRIES"]["is_default"] is False
    assert admin.delete("/admin/settings/MAX_ORDER_RETRIES", headers=root).json()["changed"]

    # --- reference data and rates
    def post(kind: str, body: dict[str, object]) -> int:
        r = admin.post(f"/admin/reference/{kind}", json=body, headers=root)
        assert r.status_code == 201, r.text
        return int(r.json()["item"]["id"])

    country = post("countries", {"code": "PL", "name": "Poland"})
    fiat = post("fiat-currencies", {"code": "PLN", "name": "Polish zloty", "country_id": country})
    post("crypto-currencies", {"code": f"T{unique[:5].upper()}", "name": "Test coin"})
    bank = post("banks", {"code": "pko", "name": "PKO Bank Polski", "country_id": country})
    method = post("payment-methods", {"code": "blik", "name": "BLIK"})
    post("bank-methods", {"fiat_currency_id": fiat, "bank_id": bank, "payment_method_id": method})
    tz = post("time-zones", {"name": "Europe/Warsaw", "utc_offset_minutes": 60})
    r = admin.patch(f"/admin/reference/banks/{bank}", json={"name": "PKO BP"}, headers=root)
    assert r.json()["changed"] is True
    r = admin.put(
        "/admin/exchange-rates/USDT/PLN",
        json={"buy_rate": "3.95", "sell_rate": "4.05"},
        headers=root,
    )
    assert r.status_code == 200 and r.json()["median_rate"] == "4.00000000"
    rates = {
        (x["crypto"], x["fiat"]): x for x in admin.get("/admin/exchange-rates", headers=root).json()
    }
    assert rates[("USDT", "PLN")]["stale"] is False

    # --- people
    def create(body: dict[str, object]) -> dict[str, object]:
        r = admin.post("/admin/users", json=body, headers=root)
        assert r.status_code == 201, r.text
        result: dict[str, object] = r.json()
        return result

    people = {
        Role.TEAMLEAD: create(
            {
                "email": f"lead-{unique}@example.com",
                "password": "lead-password-1",
                "role": "teamlead",
                "template": "teamlead",
            }
        ),
        Role.MERCHANT: create(
            {
                "email": f"shop-{unique}@example.com",
                "password": "shop-password-1",
                "role": "merchant",
                "company_name": "Shop",
            }
        ),
        Role.SUPPORT: create(
            {
                "email": f"help-{unique}@example.com",
                "password": "help-password-1",
                "role": "support",
                "template": "support_orders",
            }
        ),
    }
    people[Role.TRADER] = create(
        {
            "email": f"trader-{unique}@example.com",
            "password": "trader-password-1",
            "role": "trader",
            "first_name": "Jan",
            "last_name": f"Kowalski{unique}",
            "team_lead_id": people[Role.TEAMLEAD]["profile_id"],
            "time_zone_id": tz,
            "commission": {"payin_percent": "2", "payout_percent": "1"},
        }
    )
    passwords = {
        Role.TEAMLEAD: "lead-password-1",
        Role.MERCHANT: "shop-password-1",
        Role.SUPPORT: "help-password-1",
        Role.TRADER: "trader-password-1",
    }
    for role, person in people.items():
        server = _server(role)
        headers = _login(server, role, str(person["email"]), passwords[role])
        me = server.get(f"/{role.value}/me", headers=headers)
        assert me.status_code == 200 and me.json()["id"] == person["id"]
        if role != Role.TRADER:  # the trader's own password route comes with the trader API
            r = server.post(
                f"/{role.value}/password",
                json={
                    "current_password": passwords[role],
                    "new_password": f"{role.value}-new-pass",
                },
                headers=headers,
            )
            assert r.status_code == 204, r.text
            _login(server, role, str(person["email"]), f"{role.value}-new-pass")
    stats = admin.get("/admin/users/stats", headers=root).json()
    assert all(stats["by_role"][r.value]["active"] >= 1 for r in Role)

    # Deactivating the support stops its token at once.
    support = _server(Role.SUPPORT)
    support_token = _login(
        support, Role.SUPPORT, str(people[Role.SUPPORT]["email"]), "support-new-pass"
    )
    r = admin.post(f"/admin/users/{people[Role.SUPPORT]['id']}/deactivate", headers=root)
    assert r.status_code == 200
    assert support.get("/support/me", headers=support_token).status_code == 401

    # --- logs
    r = admin.get("/admin/audit-logs?action=user.*&limit=200", headers=root)
    actions = [row["action"] for row in r.json()["items"]]
    assert actions.count("user.created") >= 4 and "user.deactivated" in actions
    r = admin.get("/admin/audit-logs?action=setting.updated", headers=root)
    assert {row["target_id"] for row in r.json()["items"]} >= {"RETRY_BACKOFF_FACTOR"}
    assert admin.get("/admin/logs/critical-errors", headers=root).status_code == 200

    # --- a data-subject request: export, then erase
    trader_id = people[Role.TRADER]["id"]
    bundle = admin.get(f"/admin/users/{trader_id}/export", headers=root).json()
    assert bundle["user"]["email"] == f"trader-{unique}@example.com"
    assert bundle["commissions"][0]["commission_payin"] == "2.0000"
    r = admin.post(
        f"/admin/users/{trader_id}/anonymize", json={"reason": "erasure request"}, headers=root
    )
    assert r.status_code == 200 and r.json()["changed"] is True
    detail = admin.get(f"/admin/users/{trader_id}", headers=root).json()
    assert detail["email"].startswith("anonymized-") and detail["last_name"] is None
    assert detail["is_active"] is False
    r = _server(Role.TRADER).post(
        "/trader/auth/token",
        data={"username": f"trader-{unique}@example.com", "password": "trader-password-1"},
    )
    assert r.status_code == 401
    with atomic_transaction() as session:
        assert reconcile(session) == []
    assert Decimal(rates[("USDT", "PLN")]["buy_rate"]) == Decimal("3.95")
