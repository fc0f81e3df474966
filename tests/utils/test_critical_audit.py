"""`report_critical_error` records a `critical` audit row in its own transaction (readable at
`GET /admin/logs/critical-errors`), masks what must stay secret, is limited per process so an error
storm cannot flood the table, and never raises, even with the database unreachable (after which it
backs off instead of waiting for the database on every report)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from jivapay.database.engine import bind_session_factory, get_session_factory
from jivapay.database.models import AuditLog
from jivapay.enums import Role
from jivapay.utils import notifications
from jivapay.utils.notifications import report_critical_error, reset_critical_audit_limit
from tests.api.admin_helpers import admin_client, bearer, make_staff


@pytest.fixture(autouse=True)
def _fresh_window() -> Iterator[None]:
    reset_critical_audit_limit()
    yield
    reset_critical_audit_limit()


def _critical_count(db) -> int:  # type: ignore[no-untyped-def]
    db.expire_all()
    return db.scalar(select(func.count()).where(AuditLog.level == "critical")) or 0


def test_critical_error_is_an_audit_row_readable_by_admins(db) -> None:  # type: ignore[no-untyped-def]
    # Other tests of this run may have committed critical rows: look only at newer ones.
    start = db.scalar(select(func.max(AuditLog.id))) or 0
    report_critical_error(
        RuntimeError("card 4276 1234 5678 9012 refused"),
        "payout failed for 4276123456789012",
        password="hunter2",
        order_id=42,
    )
    row = db.scalars(
        select(AuditLog).where(AuditLog.level == "critical", AuditLog.id > start)
    ).one()
    assert row.action == "system.critical_error" and row.user_id is None
    text = str(row.details)
    assert "4276123456789012" not in text and "1234 5678 9012" not in text and "9012" in text
    assert "hunter2" not in text and row.details["context"]["order_id"] == 42
    assert row.details["error_type"] == "RuntimeError"

    admin = make_staff(db, Role.ADMIN, ["audit_logs:view:all"])
    r = admin_client().get("/admin/logs/critical-errors", headers=bearer(admin))
    assert r.status_code == 200
    assert r.json()["items"][0]["id"] == row.id
    nobody = make_staff(db, Role.ADMIN, ["orders:view:all"])
    assert (
        admin_client().get("/admin/logs/critical-errors", headers=bearer(nobody)).status_code == 403
    )


def test_an_error_storm_is_capped_per_window(db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A window longer than the storm, however slow this machine is.
    monkeypatch.setattr(notifications, "CRITICAL_AUDIT_WINDOW_SECONDS", 600.0)
    before = _critical_count(db)
    for i in range(notifications.CRITICAL_AUDIT_MAX_PER_WINDOW * 3):
        report_critical_error(ValueError(f"storm {i}"), "storm")
    assert _critical_count(db) - before == notifications.CRITICAL_AUDIT_MAX_PER_WINDOW
    # The window passes: the next report is written and says how many were dropped.
    monkeypatch.setattr(notifications, "CRITICAL_AUDIT_WINDOW_SECONDS", 0.05)
    time.sleep(0.1)
    report_critical_error(ValueError("after the storm"), "calm")
    latest = db.scalars(
        select(AuditLog).where(AuditLog.level == "critical").order_by(AuditLog.id.desc())
    ).first()
    assert latest.details["error"] == "after the storm"
    assert latest.details["suppressed_before"] == notifications.CRITICAL_AUDIT_MAX_PER_WINDOW * 2


def test_never_raises_when_the_database_is_unreachable(db) -> None:  # type: ignore[no-untyped-def]
    before = _critical_count(db)
    previous = get_session_factory()
    dead = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    bind_session_factory(sessionmaker(bind=dead))
    try:
        report_critical_error(RuntimeError("db down"), "while the database is down")
    finally:
        bind_session_factory(previous)
        dead.dispose()
    assert _critical_count(db) == before
    # The database is not tried again for a while (no connection timeout per report) ...
    report_critical_error(RuntimeError("still within the back-off"), "skipped")
    assert _critical_count(db) == before
    # ... and once the back-off is over, reports are written again.
    reset_critical_audit_limit()
    report_critical_error(RuntimeError("back"), "written")
    assert _critical_count(db) == before + 1


def test_an_unhandled_request_error_is_recorded(db) -> None:  # type: ignore[no-untyped-def]
    from fastapi import APIRouter
    from fastapi.testclient import TestClient

    from jivapay.servers.app_factory import build_app

    router = APIRouter()

    @router.get("/admin/boom")
    def boom() -> None:
        raise ZeroDivisionError("secret 4111111111111111")

    start = db.scalar(select(func.max(AuditLog.id))) or 0
    app = build_app(Role.ADMIN, routers=[router])
    admin = make_staff(db, Role.ADMIN, [])
    r = TestClient(app, raise_server_exceptions=False).get("/admin/boom", headers=bearer(admin))
    assert r.status_code == 500 and "4111" not in r.text
    row = db.scalars(
        select(AuditLog).where(AuditLog.level == "critical", AuditLog.id > start)
    ).one()
    assert row.details["error_type"] == "ZeroDivisionError"
    assert "4111111111111111" not in str(row.details)
