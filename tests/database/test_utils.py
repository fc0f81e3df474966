"""Transactions, after-commit side effects, row locks and integrity-error translation."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from jivapay.database.models import RoleModel
from jivapay.database.utils import (
    atomic_transaction,
    call_after_rollback,
    enqueue_after_commit,
    forget_after_rollback,
    integrity_errors_as_domain_errors,
    lock_by_ids,
    pending_after_commit,
    read_session,
)
from jivapay.task_queue import PUBLISH_ONCE
from jivapay.utils.exceptions import DuplicateObject, ValidationFailed


@dataclass
class RecordingTask:
    """Stands in for a Celery task: records what would have been sent to the broker."""

    name: str = "test.task"
    sent: list[dict[str, Any]] = field(default_factory=list)

    def apply_async(self, args: list[Any], **options: Any) -> None:
        self.sent.append({"args": args, **options})


class BrokenTask(RecordingTask):
    def apply_async(self, args: list[Any], **options: Any) -> None:
        raise ConnectionError("broker down")


def test_enqueue_after_commit_sends_only_after_commit(db, unique) -> None:  # type: ignore[no-untyped-def]
    task = RecordingTask()
    db.add(RoleModel(name=f"r{unique}"))
    enqueue_after_commit(db, task, 42, "x", countdown=3)
    db.flush()
    assert task.sent == []
    assert pending_after_commit(db) == ["test.task"]
    db.commit()
    assert task.sent == [{"args": [42, "x"], "countdown": 3, **PUBLISH_ONCE}]
    assert pending_after_commit(db) == []


def test_enqueue_after_commit_dropped_on_rollback(db, unique) -> None:  # type: ignore[no-untyped-def]
    task = RecordingTask()
    db.add(RoleModel(name=f"r{unique}"))
    enqueue_after_commit(db, task, 1)
    db.rollback()
    db.commit()  # a later commit of the same session must not resurrect the dropped task
    assert task.sent == []


def test_enqueue_by_task_name_publishes_through_the_shared_celery_app(db, unique) -> None:  # type: ignore[no-untyped-def]
    from jivapay import task_names
    from jivapay.task_queue import celery_app

    sent: list[tuple[str, list[Any], dict[str, Any]]] = []
    original = celery_app.send_task
    celery_app.send_task = lambda name, args, **opts: sent.append((name, args, opts))  # type: ignore[method-assign]
    try:
        enqueue_after_commit(db, task_names.ORDERS_PROCESS, 7, countdown=2)
        assert pending_after_commit(db) == ["orders.process"] and sent == []
        db.commit()
    finally:
        celery_app.send_task = original  # type: ignore[method-assign]
    assert sent == [("orders.process", [7], {"countdown": 2, **PUBLISH_ONCE})]


def test_call_after_rollback_runs_only_when_the_transaction_does_not_commit(db, unique) -> None:  # type: ignore[no-untyped-def]
    undone: list[str] = []
    call_after_rollback(db, lambda: undone.append("a"), label="a")
    db.commit()
    assert undone == []  # committed: the side effect is permanent

    call_after_rollback(db, lambda: undone.append("b"), label="b")
    call_after_rollback(db, lambda: undone.append("c"), label="c")
    forget_after_rollback(db, "c")
    with db.begin_nested():  # a released savepoint is not the end of the transaction
        pass
    assert undone == []
    db.rollback()
    assert undone == ["b"]
    db.commit()
    assert undone == ["b"]  # ran once


def test_failed_send_does_not_break_the_committed_transaction(db, unique) -> None:  # type: ignore[no-untyped-def]
    db.add(RoleModel(name=f"r{unique}"))
    enqueue_after_commit(db, BrokenTask(), 1)
    db.commit()
    assert db.scalar(select(RoleModel.id).where(RoleModel.name == f"r{unique}")) is not None


def test_atomic_transaction_rolls_back_on_error(db, unique) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError), atomic_transaction() as session:
        session.add(RoleModel(name=f"a{unique}"))
        session.flush()
        raise RuntimeError("boom")
    with read_session() as session:
        assert session.scalar(select(RoleModel).where(RoleModel.name == f"a{unique}")) is None

    with atomic_transaction() as session:
        session.add(RoleModel(name=f"b{unique}"))
    with read_session() as session:
        assert session.scalar(select(RoleModel).where(RoleModel.name == f"b{unique}")) is not None


def test_unique_violation_becomes_duplicate_and_session_stays_usable(db, unique) -> None:  # type: ignore[no-untyped-def]
    db.add(RoleModel(name=f"d{unique}"))
    db.flush()
    with pytest.raises(DuplicateObject) as info, integrity_errors_as_domain_errors(db):
        db.add(RoleModel(name=f"d{unique}"))
        db.flush()
    assert info.value.status_code == 409
    assert "uq_roles_name" in info.value.message
    # The outer transaction survived the failed savepoint.
    assert db.scalar(select(RoleModel.id).where(RoleModel.name == f"d{unique}")) is not None


def test_check_violation_becomes_validation_failed(db, unique) -> None:  # type: ignore[no-untyped-def]
    from jivapay.database.models import CryptoCurrency, FiatCurrency

    fiat = FiatCurrency(code=f"F{unique[:6]}", name="f")
    crypto = CryptoCurrency(code=f"C{unique[:6]}", name="c")
    db.add_all([fiat, crypto])
    db.flush()
    with pytest.raises(ValidationFailed), integrity_errors_as_domain_errors(db):
        db.execute(
            text(
                "INSERT INTO exchange_rates (crypto_currency_id, fiat_currency_id, buy_rate, "
                "sell_rate, median_rate, source) VALUES (:c, :f, -1, 1, 1, 'manual')"
            ),
            {"c": crypto.id, "f": fiat.id},
        )


def test_lock_by_ids_blocks_a_second_transaction(committed_db, unique) -> None:  # type: ignore[no-untyped-def]
    """A row locked by one session cannot be locked (NOWAIT) by another until commit."""
    with atomic_transaction() as s:
        role = RoleModel(name=f"l{unique}")
        s.add(role)
        s.flush()
        role_id = role.id

    holder = committed_db()
    locked = lock_by_ids(holder, RoleModel, [role_id])
    assert [r.id for r in locked] == [role_id]

    outcome: dict[str, Any] = {}

    def try_lock() -> None:
        with read_session() as other:
            try:
                other.execute(
                    select(RoleModel).where(RoleModel.id == role_id).with_for_update(nowait=True)
                ).all()
                outcome["locked"] = True
            except OperationalError:
                outcome["locked"] = False
            finally:
                other.rollback()

    t = threading.Thread(target=try_lock)
    t.start()
    t.join(10)
    assert outcome == {"locked": False}
    holder.commit()
    holder.close()

    t = threading.Thread(target=try_lock)
    t.start()
    t.join(10)
    assert outcome == {"locked": True}


def test_released_savepoint_does_not_send_early(db, unique) -> None:  # type: ignore[no-untyped-def]
    task = RecordingTask()
    enqueue_after_commit(db, task, 7)
    with db.begin_nested():
        db.add(RoleModel(name=f"s{unique}"))
    assert task.sent == []  # a SAVEPOINT release is not the commit
    try:
        with db.begin_nested():
            raise ValueError("inner failure")
    except ValueError:
        pass
    db.commit()
    assert task.sent == [{"args": [7], **PUBLISH_ONCE}]
