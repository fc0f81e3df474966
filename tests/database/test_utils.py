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
    enqueue_after_commit,
    get_db_session,
    integrity_errors_as_domain_errors,
    lock_by_ids,
    pending_after_commit,
)
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
    assert task.sent == [{"args": [42, "x"], "countdown": 3, "retry": False}]
    assert pending_after_commit(db) == []


def test_enqueue_after_commit_dropped_on_rollback(db, unique) -> None:  # type: ignore[no-untyped-def]
    task = RecordingTask()
    db.add(RoleModel(name=f"r{unique}"))
    enqueue_after_commit(db, task, 1)
    db.rollback()
    db.commit()  # a later commit of the same session must not resurrect the dropped task
    assert task.sent == []


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
    with get_db_session() as session:
        assert session.scalar(select(RoleModel).where(RoleModel.name == f"a{unique}")) is None

    with atomic_transaction() as session:
        session.add(RoleModel(name=f"b{unique}"))
    with get_db_session() as session:
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
        with get_db_session() as other:
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
    assert task.sent == [{"args": [7], "retry": False}]
