"""`Idempotency-Key` handling, 1-255 printable ASCII characters (`KEY_PATTERN`): the gateway's keys are scoped per store, the staff
money moves' keys per acting user (`run_idempotent(store_id=...)` or `run_idempotent(user_id=...)`).

Everything happens in the request's own transaction, so a crash or an error leaves nothing behind
and the key can simply be retried:

1. `pg_try_advisory_xact_lock` on (owner, key): false means a request with this key is running now
   → 409 `idempotency_key_in_progress`. The lock ends with the transaction. The lock and the key's
   row are read in one call, the database function `claim_idempotency_key` (migration 0010): it
   reads the row by a statement of its own, after the lock, so it sees the row of every request
   that held the lock before, even when the statement calling it started earlier. The gateway's
   intake calls it in the statement that authenticates the store (`store_key_claim`), only when
   the request's signature was verified before that statement (a forged request must not hold
   the store's key, not even while it is being refused); otherwise once the signature verifies.
2. The key's row: older than `IDEMPOTENCY_KEY_TTL_HOURS` → deleted and treated as new; another
   request fingerprint → 422 `idempotency_key_reused`; completed → its stored response is replayed.
3. Otherwise the action runs and the row (fingerprint, status, body) is inserted in the same
   transaction as the order: by the action's own statement when it knows its answer before its
   write (the gateway's intake: `pending_key_row`, `key_row_cte`), else right after the action.
   Only successes are stored: a 4xx rolls back and writes no key.

The fingerprint is sha256 over the method, the signed path and the raw body bytes: the same key with
a differently serialised body counts as a different request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CTE,
    ColumnElement,
    Table,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    null,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import IdempotencyKey
from jivapay.database.utils import integrity_errors_as_domain_errors
from jivapay.utils.config_loader import runtime_settings
from jivapay.utils.exceptions import (
    BadRequest,
    IdempotencyKeyInProgress,
    IdempotencyKeyMismatch,
)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Printable ASCII, no space at either end (HTTP servers strip those anyway).
KEY_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$"
# The advisory lock id of a (store, key) pair; tests hold it from another connection.
LOCK_ID_SQL = "hashtextextended(CAST(:store_id AS text) || ':' || :key, 0)"
# A staff user's (user, key) pair: prefixed so it never shares a lock id with a store's key.
USER_LOCK_ID_SQL = "hashtextextended('user:' || CAST(:user_id AS text) || ':' || :key, 0)"
_CLAIM = {
    "store_id": text(f"SELECT claim_idempotency_key({LOCK_ID_SQL}, :store_id, NULL, :key)"),
    "user_id": text(f"SELECT claim_idempotency_key({USER_LOCK_ID_SQL}, NULL, :user_id, :key)"),
}

Action = Callable[[], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]
    replayed: bool


def validate_key(key: str | None) -> str:
    """The header's value, or 400 `idempotency_key_required` / `idempotency_key_invalid`."""
    if key is None or not key.strip():
        raise BadRequest(f"the {HEADER} header is required", code="idempotency_key_required")
    valid = valid_key(key)
    if valid is None:
        raise BadRequest(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            code="idempotency_key_invalid",
        )
    return valid


def valid_key(key: str | None) -> str | None:
    """The header's value when it is a valid key, else None (no error: `validate_key` answers)."""
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not re.fullmatch(KEY_PATTERN, key):
        return None
    return key


@dataclass(frozen=True)
class KeyClaim:
    """What `claim_idempotency_key` answered: whether this transaction now holds the key's lock,
    and the key's row as it stood once the lock was held (None: no row; not read when unlocked)."""

    locked: bool
    row: Mapping[str, Any] | None

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> KeyClaim:
        return cls(locked=bool(value["locked"]), row=value.get("row"))


# The bound parameter and the label of `store_key_claim`'s column.
KEY_PARAMETER = "idempotency_key"
CLAIM_LABEL = "idempotency_key_claim"


def store_key_claim(
    store_id: ColumnElement[Any], verified: ColumnElement[bool]
) -> ColumnElement[Any]:
    """`claim_idempotency_key` for (`store_id`, the bound `idempotency_key`), with the lock id
    `run_idempotent` uses (`LOCK_ID_SQL`), as a column of the statement that reads the store, so
    an intake spends no round trip on its key; taken only where `verified` (the request's signature
    checked before the statement: `security.signature_verified`), NULL otherwise, and
    `run_idempotent` then claims the key itself. `loaded_claim` reads the result."""
    lock_id = func.hashtextextended(
        store_id.cast(Text).concat(":").concat(bindparam(KEY_PARAMETER, type_=Text)), 0
    )
    claim = func.claim_idempotency_key(
        lock_id, store_id, null(), bindparam(KEY_PARAMETER, type_=Text), type_=JSONB
    )
    return case((verified, claim), else_=null()).label(CLAIM_LABEL)


def loaded_claim(loaded: Mapping[str, Any]) -> KeyClaim | None:
    """The claim `store_key_claim` read with the store, or None when it was not asked for."""
    value = loaded.get(CLAIM_LABEL)
    return None if value is None else KeyClaim.from_json(value)


def request_fingerprint(*, method: str, path: str, body: bytes) -> str:
    """sha256 hex of the method, path and raw body."""
    digest = hashlib.sha256(f"{method.upper()} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _ttl(session: Session) -> timedelta:
    return timedelta(hours=runtime_settings(session).IDEMPOTENCY_KEY_TTL_HOURS)


_KEYS = cast(Table, IdempotencyKey.__table__)
_DELETE = delete(_KEYS).where(_KEYS.c.id == bindparam("key_id"))
_ROW_COLUMNS = (
    "store_id",
    "user_id",
    "key",
    "request_fingerprint",
    "response_status",
    "response_body",
    "created_at",
    "completed_at",
)
_INSERT = insert(_KEYS).values({column: bindparam(column) for column in _ROW_COLUMNS})
_ROW_PREFIX = "idempotency_"
_PENDING = "jivapay_idempotency_pending_row"


def key_row_cte() -> CTE:
    """The key's row as a data-modifying CTE (`idempotency_key_row`) whose values are bound
    parameters named `idempotency_<column>`, for an action's statement built once that writes its
    own row and the key's in one round trip (`PendingKeyRow.parameters_with`)."""
    values: dict[str, Any] = {column: bindparam(_ROW_PREFIX + column) for column in _ROW_COLUMNS}
    return insert(_KEYS).values(values).cte("idempotency_key_row")


@dataclass
class PendingKeyRow:
    """The key's row of the idempotent request running on a session: `run_idempotent` inserts it
    after the action, unless the action wrote it with its own statement (`parameters_with`)."""

    values: dict[str, Any]
    body: dict[str, Any] | None = None

    def parameters_with(self, body: dict[str, Any]) -> dict[str, Any]:
        """`key_row_cte`'s parameters for the answer `body`; the row then counts as written."""
        self.body = body
        return {_ROW_PREFIX + column: value for column, value in self.row(body).items()}

    def row(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**self.values, "response_body": body}


def pending_key_row(session: Session) -> PendingKeyRow | None:
    """The key's row an action running under `run_idempotent(status_code=...)` may write itself."""
    pending: PendingKeyRow | None = session.info.get(_PENDING)
    return pending


def key_conflicts() -> dict[str, IdempotencyKeyInProgress]:
    """The key's unique constraints, as `integrity_errors_as_domain_errors` messages: a row of the
    same key written meanwhile is a request in progress (409)."""
    return {
        "uq_idempotency_keys_store_id_key": IdempotencyKeyInProgress(),
        "uq_idempotency_keys_user_id_key": IdempotencyKeyInProgress(),
    }


def run_idempotent(
    session: Session,
    *,
    key: str,
    fingerprint: str,
    action: Action,
    store_id: int | None = None,
    user_id: int | None = None,
    now: datetime | None = None,
    claim: KeyClaim | None = None,
    status_code: int | None = None,
) -> StoredResponse:
    """Replay the stored response of (store or user, key), or run `action` and store its response.

    `claim`: the key's lock and row when this transaction already claimed them
    (`store_key_claim`); None claims them here. `status_code`: the status `action` answers when it
    succeeds; given, the action may write the key's row with its own statement
    (`pending_key_row`), and the body it wrote is the one answered."""
    if (store_id is None) == (user_id is None):
        raise ValueError("exactly one of store_id and user_id owns an idempotency key")
    now = now or utcnow()
    if claim is None:
        owner = "store_id" if store_id is not None else "user_id"
        claimed = session.execute(
            _CLAIM[owner], {owner: store_id if store_id is not None else user_id, "key": key}
        ).scalar_one()
        claim = KeyClaim.from_json(claimed)
    if not claim.locked:
        raise IdempotencyKeyInProgress()
    row = claim.row
    if row is not None and datetime.fromisoformat(row["created_at"]) <= now - _ttl(session):
        session.execute(_DELETE, {"key_id": row["id"]})
        row = None
    if row is not None:
        if row["request_fingerprint"] != fingerprint:
            raise IdempotencyKeyMismatch()
        if row["response_status"] is None or row["response_body"] is None:
            raise IdempotencyKeyInProgress()
        return StoredResponse(row["response_status"], row["response_body"], replayed=True)

    values: dict[str, Any] = {
        "store_id": store_id,
        "user_id": user_id,
        "key": key,
        "request_fingerprint": fingerprint,
        "response_status": status_code,
        "created_at": now,
        "completed_at": now,
    }
    pending = PendingKeyRow(values) if status_code is not None else None
    session.info[_PENDING] = pending
    try:
        answered, body = action()
    finally:
        session.info.pop(_PENDING, None)
    if pending is not None and pending.body is not None:
        assert answered == status_code, (answered, status_code)
        return StoredResponse(answered, pending.body, replayed=False)
    # The advisory lock already serialises a key; the unique key covers a hash collision race.
    # No savepoint: the 409 ends the request's transaction, which rolls back whole.
    with integrity_errors_as_domain_errors(session, key_conflicts(), savepoint=False):
        session.execute(_INSERT, {**values, "response_status": answered, "response_body": body})
    return StoredResponse(answered, body, replayed=False)


def delete_expired_keys(session: Session, *, now: datetime | None = None) -> int:
    """Delete keys older than `IDEMPOTENCY_KEY_TTL_HOURS`; returns how many (for the scheduler)."""
    cutoff = (now or utcnow()) - _ttl(session)
    result = session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at <= cutoff)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
