"""`GET /admin/audit-logs` filters (action exact and prefix, user, target, level, dates) and the
refusal of bad filters; bad bodies on the GDPR customer route write nothing."""

from __future__ import annotations

from datetime import timedelta

from jivapay.database.base import utcnow
from jivapay.enums import AuditLevel, Role
from jivapay.services.audit_logger import log_event
from tests.api.admin_helpers import admin_client, bearer, make_staff, row_counts


def test_audit_log_filters(db, unique) -> None:  # type: ignore[no-untyped-def]
    reader = make_staff(db, Role.ADMIN, ["audit_logs:view:all", "users:anonymize:all"])
    actor = make_staff(db, Role.ADMIN, [])
    log_event(db, action=f"t{unique}.one", user_id=actor.id, target_entity="store", target_id=7)
    log_event(
        db,
        action=f"t{unique}.two",
        user_id=actor.id,
        target_entity="store",
        target_id=8,
        level=AuditLevel.WARNING,
    )
    log_event(db, action=f"t{unique}_x.three", target_entity="user", target_id=7)
    client, h = admin_client(), bearer(reader)

    def actions(query: str) -> list[str]:
        r = client.get(f"/admin/audit-logs?{query}", headers=h)
        assert r.status_code == 200, r.text
        return [row["action"] for row in r.json()["items"]]

    assert actions(f"action=t{unique}.one") == [f"t{unique}.one"]
    assert actions(f"action=t{unique}.*") == [f"t{unique}.two", f"t{unique}.one"]  # newest first
    assert actions(f"action=t{unique}.*&level=warning") == [f"t{unique}.two"]
    assert actions(f"user_id={actor.id}") == [f"t{unique}.two", f"t{unique}.one"]
    assert actions(f"action=t{unique}*&target_entity=store&target_id=7") == []
    assert actions(f"action=t{unique}.*&target_entity=store&target_id=7") == [f"t{unique}.one"]
    later = (utcnow() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert actions(f"action=t{unique}.*&date_from={later}") == []
    earlier = (utcnow() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert len(actions(f"action=t{unique}.*&date_from={earlier}&date_to={later}")) == 2
    for bad in ("level=loud", "user_id=0", f"date_from={later}&date_to={earlier}", "limit=500"):
        r = client.get(f"/admin/audit-logs?{bad}", headers=h)
        assert r.status_code == 422, bad
        assert r.headers["content-type"].startswith("application/problem+json")

    before = row_counts(db)
    for body in (
        {"store_id": 0, "customer_id": "x"},
        {"store_id": 1},
        {"store_id": 1, "customer_id": ""},
        {"store_id": 1, "customer_id": "x" * 256},
        {"store_id": "one", "customer_id": "x"},
    ):
        r = client.post("/admin/customers/anonymize", json=body, headers=h)
        assert r.status_code == 422, body
    assert row_counts(db) == before
