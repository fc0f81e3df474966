"""`POST /admin/system/worker-ping` against a real Celery worker (200 with its host name) and with
no worker consuming the queue (503 problem), and the last-superuser rule under concurrency: two
superusers deactivating each other at the same moment leave exactly one active."""

from __future__ import annotations

import threading
import time

import pytest

from jivapay.enums import Role
from jivapay.security import Principal
from jivapay.services import user_admin
from jivapay.utils.exceptions import Conflict
from tests.api.admin_helpers import admin_client, bearer, make_staff


def test_worker_ping_answers_503_without_a_worker_and_200_with_one(
    committed_db, celery_worker
) -> None:  # type: ignore[no-untyped-def]
    with committed_db() as session:
        admin = make_staff(session, Role.ADMIN, ["settings:view:all"])
        session.commit()
        headers = bearer(admin)
    client = admin_client()
    r = client.post("/admin/system/worker-ping?timeout=1", headers=headers)
    assert r.status_code == 503 and r.json()["code"] == "worker_unavailable"
    assert r.headers["content-type"].startswith("application/problem+json")
    celery_worker()
    deadline = time.monotonic() + 60
    while True:
        r = client.post("/admin/system/worker-ping?timeout=5", headers=headers)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
    assert r.status_code == 200, r.text
    assert r.json()["hostname"] and int(r.json()["round_trip_ms"]) >= 0
    assert client.post("/admin/system/worker-ping?timeout=99", headers=headers).status_code == 422


def test_two_superusers_deactivating_each_other_leave_one(committed_db) -> None:  # type: ignore[no-untyped-def]
    with committed_db() as session:
        first = make_staff(session, Role.ADMIN, ["superuser"])
        second = make_staff(session, Role.ADMIN, ["*"])
        session.commit()
        ids = (first.id, second.id)
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def deactivate(actor_id: int, target_id: int) -> None:
        actor = Principal(
            user_id=actor_id, role=Role.ADMIN, email="x", profile_id=0, permissions=("superuser",)
        )
        with committed_db() as session:
            # Both load their target row first, then race for the superuser check.
            user_admin.load_user(session, target_id, for_update=True)
            barrier.wait(timeout=10)
            try:
                user_admin.set_active(session, actor=actor, user_id=target_id, active=False)
                session.commit()
                outcomes[target_id] = "deactivated"
            except Conflict as exc:
                session.rollback()
                outcomes[target_id] = exc.code

    threads = [
        threading.Thread(target=deactivate, args=(ids[0], ids[1])),
        threading.Thread(target=deactivate, args=(ids[1], ids[0])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes.values()) == ["deactivated", "last_superuser"], outcomes
    with committed_db() as session:
        from jivapay.database.models import User

        active = [session.get(User, i).is_active for i in ids]
    assert active.count(True) == 1


@pytest.fixture(autouse=True)
def _no_seeded_superusers(committed_db) -> None:  # type: ignore[no-untyped-def]
    """The committed database of this test starts empty (earlier committed tests truncate)."""
    from sqlalchemy import func, select

    from jivapay.database.models import User

    with committed_db() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
