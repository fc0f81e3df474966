"""Sessions, transactions, after-commit side effects, row locks and integrity-error translation.

The edge owns the transaction (a request, a task, a CLI command); services only flush. Side effects
such as Celery tasks are queued on the session with `enqueue_after_commit` and sent from the
`after_commit` event, so a rolled-back transaction never sends anything. Sending is best-effort: the
database is the source of truth and the scheduler's sweepers pick up whatever a crash dropped.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import structlog
from sqlalchemy import ColumnElement, event, func, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, SessionTransaction

from jivapay import task_queue
from jivapay.database.engine import SessionLocal
from jivapay.utils.exceptions import (
    DatabaseError,
    DuplicateObject,
    JivaPayException,
    ValidationFailed,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")
_AFTER_COMMIT_KEY = "jivapay_after_commit"


# --------------------------------------------------------------------------- sessions and transactions


@contextmanager
def read_session() -> Iterator[Session]:
    """A session that never commits: closed (its transaction rolled back) when the block ends.

    For reads outside a request or task transaction (health checks, sweeps that list due ids).
    Anything written in it is discarded; to write, own a transaction with `atomic_transaction`.
    """
    session = SessionLocal()
    try:
        yield session
    finally:
        session.close()


F = TypeVar("F", bound=Callable[..., Any])


def transaction_flow(func: F) -> F:
    """Mark `func` as a flow: an orchestration that owns (several) transactions itself.

    Services only flush; the few functions that must commit on their own (a failure recorded after
    the attempt rolled back, an HTTP call between two transactions) carry this marker, are listed
    in docs/architecture.md, and are the only service code `tests/test_architecture.py` lets call
    `commit()` or `atomic_transaction`.
    """
    func.__transaction_flow__ = True  # type: ignore[attr-defined]
    return func


@contextmanager
def atomic_transaction(session: Session | None = None) -> Iterator[Session]:
    """One transaction: commit when the block succeeds, roll back (and re-raise) when it fails.

    Without a session, opens and closes its own. With one, commits that session's current work.
    """
    own = session is None
    sess = SessionLocal() if session is None else session
    try:
        yield sess
        sess.commit()
    except BaseException:
        sess.rollback()
        raise
    finally:
        if own:
            sess.close()


async def db_session_dependency() -> AsyncIterator[Session]:
    """FastAPI dependency: one transaction per request, committed before the response is sent.

    Declare with `Depends(db_session_dependency, scope="function")` so the commit runs before the
    response leaves (FastAPI >= 0.121); `api_routers.deps.DbSession` does.

    Opening a session touches no connection, so it happens on the event loop; only the end (commit
    or rollback, then close) takes a trip to a worker thread. That trip is shielded from
    cancellation and has its own capacity limiter, as FastAPI does for a sync generator's exit: a
    request holding a pooled connection must not wait for a free thread to give it back.
    """
    session = SessionLocal()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                _end_request_session, session, False, limiter=anyio.CapacityLimiter(1)
            )
        raise
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(
            _end_request_session, session, True, limiter=anyio.CapacityLimiter(1)
        )


def run_request_transaction(work: Callable[[Session], T]) -> T:
    """Run `work` with a new request session in the calling thread and end it as
    `db_session_dependency` does: commit when `work` returns, roll back when it raises, close
    (`atomic_transaction`; this name marks a request edge, where routers may not commit themselves).

    For a route that runs its whole request in one worker thread (the gateway's intake,
    `api_routers.gateway.routes.OneTripIntakeRoute`): the commit still precedes the response.
    """
    with atomic_transaction() as session:
        return work(session)


def _end_request_session(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --------------------------------------------------------------------------- after-commit side effects


_COMMITTED_KEY = "jivapay_committed_side_effects"


@dataclass(frozen=True)
class _Pending:
    send: Callable[[], Any]
    label: str


@dataclass
class _Queue:
    items: list[_Pending] = field(default_factory=list)  # run after the commit
    undo: list[_Pending] = field(default_factory=list)  # run when the transaction ends without one


def _queue(session: Session) -> _Queue:
    queue = session.info.get(_AFTER_COMMIT_KEY)
    if queue is None:
        queue = session.info[_AFTER_COMMIT_KEY] = _Queue()
    return queue


def enqueue_after_commit(session: Session, task: str | Any, *args: Any, **options: Any) -> None:
    """Send task `task` (a `task_names` constant) with `args` once `session` commits; drop it on rollback.

    `options` go to Celery (countdown, queue ...). A task object with `apply_async` is accepted too,
    for callers inside the worker and for tests.
    """
    # One attempt: with the broker down the sweepers re-send from the database, so a request
    # never waits through Celery's publish retries (nor for a result backend nobody reads).
    for key, value in task_queue.PUBLISH_ONCE.items():
        options.setdefault(key, value)
    if isinstance(task, str):
        name = task
        send: Callable[[], Any] = lambda: task_queue.send_task(name, *args, **options)  # noqa: E731
    else:
        name = getattr(task, "name", repr(task))
        send = lambda: task.apply_async(args=list(args), **options)  # noqa: E731
    _queue(session).items.append(_Pending(send=send, label=name))


def call_after_commit(session: Session, func: Callable[[], Any], label: str = "callback") -> None:
    """Run `func` once `session` commits (for non-Celery side effects); dropped on rollback."""
    _queue(session).items.append(_Pending(send=func, label=label))


def call_after_rollback(session: Session, func: Callable[[], Any], label: str) -> None:
    """Run `func` if `session`'s transaction ends without a commit (rolled back or closed).

    For side effects done before the commit that only the commit makes permanent (an object
    uploaded to S3); dropped on commit. `label` names it for `forget_after_rollback`.
    """
    _queue(session).undo.append(_Pending(send=func, label=label))


def forget_after_rollback(session: Session, label: str) -> None:
    """Drop the `call_after_rollback` registrations named `label` (undone already)."""
    queue = session.info.get(_AFTER_COMMIT_KEY)
    if queue is not None:
        queue.undo = [p for p in queue.undo if p.label != label]


def pending_after_commit(session: Session) -> list[str]:
    """Labels of the side effects waiting for this session's commit (for tests and debugging)."""
    return [p.label for p in _queue(session).items]


def _run(pendings: list[_Pending], event_name: str, what: str) -> None:
    for pending in pendings:
        try:
            pending.send()
        except Exception as exc:  # the sweepers recover; never break the committed request
            log.warning(event_name, task=pending.label, error=str(exc))
            from jivapay.utils.notifications import report_critical_error

            report_critical_error(exc, what, task=pending.label)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    # SQLAlchemy also fires after_commit when a SAVEPOINT is released; only the real commit counts.
    if session.in_nested_transaction():
        return
    queue = session.info.pop(_AFTER_COMMIT_KEY, None)
    if queue:
        # after_commit fires while the connection is still checked out: send once it is returned.
        session.info.setdefault(_COMMITTED_KEY, []).extend(queue.items)


@event.listens_for(Session, "after_transaction_end")
def _send_committed(session: Session, transaction: Any) -> None:
    if transaction.parent is not None:
        return
    items = session.info.pop(_COMMITTED_KEY, None)
    if items:
        _run(items, "after_commit_send_failed", "after-commit side effect failed")


@event.listens_for(Session, "after_transaction_end")
def _undo_without_commit(session: Session, transaction: SessionTransaction) -> None:
    # A rolled-back SAVEPOINT keeps the outer transaction alive: its queued side effects stay
    # (tasks are idempotent and re-read the database, so one queued inside it is harmless).
    # The outermost transaction ending with its queue still here did not commit (a commit pops
    # it first): the queued tasks are dropped and the undo side effects run.
    if transaction.parent is not None:
        return
    queue = session.info.pop(_AFTER_COMMIT_KEY, None)
    if queue:
        _run(queue.undo, "after_rollback_undo_failed", "undo after rollback failed")


def generic_plans_column() -> ColumnElement[str]:
    """A column that plans the rest of this transaction's prepared statements once, not at every
    execution: `set_config(..., is_local => true)` is `SET LOCAL plan_cache_mode =
    force_generic_plan`, set by the transaction's first statement for the statements after it (not
    for itself, planned before it runs) without a round trip of its own.

    psycopg prepares a statement on its fifth run on a connection; PostgreSQL then still plans it
    again for every execution ("custom plans") as long as those look cheaper than the generic
    plan, which they always do for a query whose `CAST(:x AS BIGINT) IS NULL OR ...` terms fold
    away with the values. For the assignment selector (eight relations, a lateral subquery) that
    planning cost ~4.7 ms of server CPU per execution against ~0.2 ms of execution, with the same
    plan every time. `SET LOCAL` ends with the transaction, so a pooled connection returns to the
    default and the other queries of the platform keep their value-specific plans.
    """
    return func.set_config("plan_cache_mode", "force_generic_plan", true()).label("generic_plans")


# --------------------------------------------------------------------------- row locks


def lock_by_ids(
    session: Session,
    model: type[T],
    ids: Iterable[int],
    *,
    skip_locked: bool = False,
) -> list[T]:
    """Lock rows of `model` by primary key in ascending id order (a fixed order avoids deadlocks)."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    id_col = model.id  # type: ignore[attr-defined]
    stmt = (
        select(model)
        .where(id_col.in_(wanted))
        .order_by(id_col)
        .with_for_update(skip_locked=skip_locked)
    )
    return list(session.scalars(stmt))


def lock_or_create(
    session: Session, model: type[T], key: dict[str, Any], defaults: dict[str, Any] | None = None
) -> T:
    """Lock the row of `model` whose unique key is `key`, inserting it first when it is missing.

    `INSERT ... ON CONFLICT DO NOTHING` then `SELECT ... FOR UPDATE`: two transactions creating the
    same row at once both end up holding the one row (the second waits) instead of one failing on
    the unique key. The row is re-read even if the session already holds it, so the caller never
    computes on a value another transaction changed before the lock was granted.
    """
    session.flush()
    insert_stmt = pg_insert(model).values(**key, **(defaults or {}))
    session.execute(insert_stmt.on_conflict_do_nothing(index_elements=list(key)))
    stmt = (
        select(model).filter_by(**key).with_for_update().execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one()


# --------------------------------------------------------------------------- integrity errors

_CONSTRAINT_RE = re.compile(r'constraint "([^"]+)"')


def constraint_name(exc: IntegrityError) -> str | None:
    """The name of the violated constraint, from the driver's diagnostics or the message."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name:
        return str(name)
    match = _CONSTRAINT_RE.search(str(orig))
    return match.group(1) if match else None


def translate_integrity_error(
    exc: IntegrityError, messages: Mapping[str, JivaPayException] | None = None
) -> JivaPayException:
    """Map a violated constraint to a domain error: a known name to its error, else a generic one."""
    name = constraint_name(exc) or ""
    if messages and name in messages:
        return messages[name]
    if name.startswith("uq_"):
        return DuplicateObject(f"already exists ({name})", extra={"constraint": name})
    if name.startswith(("ck_", "fk_")) or "not-null" in str(exc.orig).lower():
        return ValidationFailed(f"value rejected by the database ({name or 'constraint'})")
    return DuplicateObject("conflicting write")


@contextmanager
def integrity_errors_as_domain_errors(
    session: Session,
    messages: Mapping[str, JivaPayException] | None = None,
    *,
    savepoint: bool = True,
) -> Iterator[None]:
    """Inside the block, a flush that violates a constraint raises the mapped domain error.

    Runs the block in a savepoint so the outer transaction stays usable after the failure.
    `savepoint=False` saves the SAVEPOINT/RELEASE round trips for a write whose failure ends the
    transaction anyway (a request's intake answers 409 and rolls back): after the error the
    session must be rolled back before it is used again.
    """
    if not savepoint:
        try:
            yield
        except IntegrityError as exc:
            raise translate_integrity_error(exc, messages) from exc
        return
    try:
        with session.begin_nested():
            yield
    except IntegrityError as exc:
        raise translate_integrity_error(exc, messages) from exc


# SQLSTATEs of a server that is gone or not there yet: connection exceptions (class 08), and
# `admin_shutdown`, `crash_shutdown`, `cannot_connect_now` (a restart, a crash, recovery running).
_UNAVAILABLE_SQLSTATES = ("57P01", "57P02", "57P03")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached (down, restarting, failing over, or no
    pooled connection free in time): transient, answered 503 rather than a bug's 500. Deadlocks,
    serialization failures and other errors of a working server are not."""
    if isinstance(exc, SQLAlchemyTimeoutError):  # the pool stayed exhausted for pool_timeout
        return True
    if not isinstance(exc, OperationalError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    # No SQLSTATE: the client library failed to connect or lost the socket.
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES


@contextmanager
def database_errors_as_domain_errors() -> Iterator[None]:
    """Connection loss and similar operational failures surface as `DatabaseError` (503)."""
    try:
        yield
    except (OperationalError, SQLAlchemyTimeoutError) as exc:
        if not database_unavailable(exc):
            raise
        raise DatabaseError("database unavailable") from exc
