"""Audit rows: written in the caller's transaction, scrubbed of secrets."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import AuditLog
from jivapay.enums import AuditLevel
from jivapay.services.audit_logger import log_event


def test_log_event_flushes_a_scrubbed_row(db: Session, unique: str) -> None:
    row = log_event(
        db,
        action=f"test.{unique}",
        target_entity="order",
        target_id=123,
        details={
            "password": "hunter2",
            "note": "card 4111 1111 1111 1234 used",
            "amount": Decimal("10.50"),
            "nested": {"private_api_key": "sk_abc"},
        },
        ip_address="203.0.113.7",
        level=AuditLevel.WARNING,
    )
    assert row.id is not None  # flushed
    stored = db.scalars(select(AuditLog).where(AuditLog.action == f"test.{unique}")).one()
    db.refresh(stored)
    assert stored.target_id == "123"
    assert stored.user_id is None
    assert stored.level == "warning"
    assert stored.ip_address == "203.0.113.7"
    assert stored.details["password"] == "[Filtered]"
    assert stored.details["nested"]["private_api_key"] == "[Filtered]"
    assert "4111" not in stored.details["note"] and stored.details["note"].endswith("1234 used")
    assert stored.details["amount"] == "10.50"


def test_log_event_is_rolled_back_with_the_caller(db: Session, unique: str) -> None:
    nested = db.begin_nested()
    log_event(db, action=f"gone.{unique}")
    nested.rollback()
    assert db.scalars(select(AuditLog).where(AuditLog.action == f"gone.{unique}")).first() is None
