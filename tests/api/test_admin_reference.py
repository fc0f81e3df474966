"""Reference data and exchange rates through the admin API: every kind can be created, listed and
deactivated (never deleted); duplicates are 409 and malformed codes 422 with nothing written; the
reference cache is invalidated after commit; rates are validated, show their age and staleness,
and the refresh reports what changed and what was refused."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from jivapay.database.base import utcnow
from jivapay.database.models import AuditLog, ExchangeRate
from jivapay.enums import Role
from jivapay.services import reference_data
from tests.api.admin_helpers import admin_client, bearer, free_port, make_staff, row_counts
from tests.factories import make_reference


@pytest.fixture
def client(db):  # type: ignore[no-untyped-def]
    return admin_client()


@pytest.fixture
def editor(db):  # type: ignore[no-untyped-def]
    return make_staff(db, Role.ADMIN, ["reference:*", "exchange_rates:*", "settings:*"])


def _tag() -> str:
    return uuid.uuid4().hex[:6]


def _bodies(db) -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """kind: (valid body, malformed body, patch body)."""
    t = _tag()
    ref = make_reference(db)
    letters = "".join(chr(ord("A") + int(c, 16) % 26) for c in t)
    return {
        "countries": (
            {"code": letters[:2], "name": "Testland"},
            {"code": "xx", "name": "x"},
            {"name": "Renamed"},
        ),
        "fiat-currencies": (
            {"code": f"F{letters[:4]}", "name": "Test fiat", "symbol": "T"},
            {"code": "rub", "name": "lower case"},
            {"is_active": False},
        ),
        "crypto-currencies": (
            {"code": f"C{letters[:4]}", "name": "Test coin", "network": "TRC20"},
            {"code": "US DT", "name": "space"},
            {"is_active": False},
        ),
        "banks": (
            {"code": f"bank-{t}", "name": "Bank"},
            {"code": "Bad Code!", "name": "x"},
            {"is_active": False},
        ),
        "payment-methods": (
            {"code": f"sbp-{t}", "name": "SBP"},
            {"code": "", "name": "x"},
            {"is_active": False},
        ),
        "bank-methods": (
            {
                "fiat_currency_id": ref.fiat.id,
                "bank_id": ref.bank.id,
                "payment_method_id": ref.method.id,
            },
            {"fiat_currency_id": "one", "bank_id": ref.bank.id, "payment_method_id": ref.method.id},
            {"is_active": False},
        ),
        "time-zones": (
            {"name": "Asia/Tashkent", "utc_offset_minutes": 300},
            {"name": "Mars/Olympus", "utc_offset_minutes": 0},
            {"utc_offset_minutes": 360},
        ),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "countries",
        "fiat-currencies",
        "crypto-currencies",
        "banks",
        "payment-methods",
        "bank-methods",
        "time-zones",
    ],
)
def test_reference_kind_create_duplicate_malformed_and_deactivate(client, db, editor, kind) -> None:  # type: ignore[no-untyped-def]
    valid, malformed, patch = _bodies(db)[kind]
    if kind == "time-zones":
        from jivapay.database.models import TimeZone

        for tz in db.scalars(select(TimeZone).where(TimeZone.name == "Asia/Tashkent")):
            db.delete(tz)
        db.flush()
    h = bearer(editor)
    r = client.post(f"/admin/reference/{kind}", json=valid, headers=h)
    assert r.status_code == 201, r.text
    item = r.json()["item"]
    before = row_counts(db)
    r = client.post(f"/admin/reference/{kind}", json=valid, headers=h)
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    r = client.post(f"/admin/reference/{kind}", json=malformed, headers=h)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    r = client.post(f"/admin/reference/{kind}", json={**valid, "unknown": 1}, headers=h)
    assert r.status_code == 422
    assert row_counts(db) == before

    r = client.patch(f"/admin/reference/{kind}/{item['id']}", json=patch, headers=h)
    assert r.status_code == 200 and r.json()["changed"] is True, r.text
    for field, value in patch.items():
        assert r.json()["item"][field] == value
    r = client.patch(f"/admin/reference/{kind}/{item['id']}", json=patch, headers=h)
    assert r.json()["changed"] is False
    r = client.patch(f"/admin/reference/{kind}/999999999", json=patch, headers=h)
    assert r.status_code == 404
    if "code" in valid:
        r = client.patch(f"/admin/reference/{kind}/{item['id']}", json={"code": "NEW"}, headers=h)
        assert r.status_code == 422  # codes never change

    r = client.get(f"/admin/reference/{kind}?limit=200", headers=h)
    assert r.status_code == 200 and r.json()["total"] >= 1
    if "is_active" in patch:
        r = client.get(f"/admin/reference/{kind}?active=false&limit=200", headers=h)
        assert item["id"] in [row["id"] for row in r.json()["items"]]
    assert client.get("/admin/reference/planets", headers=h).status_code == 422


def test_bank_change_invalidates_the_cache_after_commit(committed_db) -> None:  # type: ignore[no-untyped-def]
    with committed_db() as session:
        editor = make_staff(session, Role.ADMIN, ["reference:*"])
        ref = make_reference(session)
        session.commit()
        bank_id, headers = ref.bank.id, bearer(editor)
    with committed_db() as session:
        assert reference_data.get_bank_details(session, bank_id=bank_id).name == "Test bank"
    r = admin_client().patch(
        f"/admin/reference/banks/{bank_id}", json={"name": "Renamed bank"}, headers=headers
    )
    assert r.status_code == 200
    with committed_db() as session:
        assert reference_data.get_bank_details(session, bank_id=bank_id).name == "Renamed bank"
        audit = session.scalars(
            select(AuditLog).where(
                AuditLog.action == "bank.update", AuditLog.target_id == str(bank_id)
            )
        ).one()
        assert audit.details["changes"] == {"name": "Renamed bank"}


def test_exchange_rates_set_validate_and_show_staleness(client, db, editor) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=Decimal("90"), rate_at=utcnow() - timedelta(days=3))
    h = bearer(editor)
    rates = client.get("/admin/exchange-rates", headers=h).json()
    mine = next(r for r in rates if r["crypto"] == ref.crypto.code and r["fiat"] == ref.fiat.code)
    assert mine["stale"] is True and mine["age_seconds"] >= 3 * 86400
    assert mine["median_rate"] == "90.00000000"

    path = f"/admin/exchange-rates/{ref.crypto.code}/{ref.fiat.code}"
    before = row_counts(db)
    for bad in (
        {"buy_rate": "0", "sell_rate": "1"},
        {"buy_rate": "1.123456789", "sell_rate": "1"},
        {"buy_rate": 1.123456789, "sell_rate": "1"},  # nine places, not rounded
        {"buy_rate": "-1", "sell_rate": "1"},
        {"buy_rate": "90", "sell_rate": "92", "median_rate": "100"},
        {"buy_rate": "90"},
    ):
        r = client.put(path, json=bad, headers=h)
        assert r.status_code == 422, (bad, r.text)
    r = client.put(
        f"/admin/exchange-rates/NOPE/{ref.fiat.code}",
        json={"buy_rate": "1", "sell_rate": "1"},
        headers=h,
    )
    assert r.status_code == 404
    assert row_counts(db) == before

    r = client.put(path, json={"buy_rate": "95.5", "sell_rate": "96.5"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["median_rate"] == "96.00000000" and r.json()["source"] == "manual"
    rates = client.get("/admin/exchange-rates", headers=h).json()
    mine = next(r for r in rates if r["crypto"] == ref.crypto.code and r["fiat"] == ref.fiat.code)
    assert mine["stale"] is False and mine["buy_rate"] == "95.50000000"


class _RatesHandler(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_refresh_reports_updated_and_refused(client, db, editor) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=Decimal("90"))
    h = bearer(editor)
    r = client.put("/admin/settings/EXCHANGE_RATE_SOURCE_URL", json={"value": ""}, headers=h)
    assert r.status_code == 200
    r = client.post("/admin/exchange-rates/refresh", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "disabled"

    _RatesHandler.body = json.dumps(
        {
            "rates": [
                {"crypto": ref.crypto.code, "fiat": ref.fiat.code, "buy": "91", "sell": "93"},
                {"crypto": "ZZZ", "fiat": ref.fiat.code, "buy": "1", "sell": "1"},
                {"crypto": ref.crypto.code, "fiat": ref.fiat.code, "buy": "-5", "sell": "1"},
            ]
        }
    ).encode()
    port = free_port()
    server = HTTPServer(("127.0.0.1", port), _RatesHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}/rates"
        r = client.put("/admin/settings/EXCHANGE_RATE_SOURCE_URL", json={"value": url}, headers=h)
        assert r.status_code == 200
        r = client.post("/admin/exchange-rates/refresh", headers=h)
    finally:
        server.shutdown()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["updated"] == [f"{ref.crypto.code}/{ref.fiat.code}"]
    assert len(body["rejected"]) == 2
    db.expire_all()
    row = db.scalars(select(ExchangeRate).where(ExchangeRate.id == ref.rate.id)).one()
    assert row.median_rate == Decimal("92") and row.source == "http"
    asked = db.scalars(
        select(AuditLog)
        .where(AuditLog.action == "exchange_rate.refresh_requested", AuditLog.user_id == editor.id)
        .order_by(AuditLog.id)
    ).all()
    assert [a.details["status"] for a in asked] == ["disabled", "ok"]
