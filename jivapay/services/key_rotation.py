"""Re-encrypting stored secrets with the newest `DATA_ENCRYPTION_KEY` (key rotation, step 2).

Owns the walk over every `EncryptedString` column of the models, one batch at a time in primary-key
order. A batch only flushes: the caller (`jivapay rotate-encryption-key`) commits each batch in a
transaction of its own, so no lock outlives a batch and an interrupted run resumes where it stopped
simply by being run again (values the newest key already reads are left alone).

Rows are read raw (the ciphertext, not the decrypted value) with `FOR UPDATE SKIP LOCKED`: a row that
a request holds is counted as busy instead of waited for, and the command asks to be run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Text, bindparam, select, type_coerce, update
from sqlalchemy.orm import Session

from jivapay.database.models import Base
from jivapay.database.types import EncryptedString, rotate_token
from jivapay.utils.exceptions import ConfigurationError


@dataclass
class ColumnRotation:
    """What one pass did to one encrypted column."""

    name: str  # "table.column"
    rotated: int = 0
    already_current: int = 0
    busy: int = 0
    unreadable: int = 0


def encrypted_columns() -> list[Column[str]]:
    """Every column stored with `EncryptedString`, in a stable order."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedString):
                if len(table.primary_key.columns) != 1:
                    raise ConfigurationError(f"{table.name}: rotation needs a single-column key")
                found.append(column)
    return sorted(found, key=lambda c: (c.table.name, c.name))


def rotate_batch(
    session: Session, column: Column[str], report: ColumnRotation, *, after: int, limit: int
) -> int | None:
    """Re-encrypt up to `limit` values of `column` whose row key is above `after`.

    Returns the last key seen (pass it as `after` for the next batch), or None when the column has
    no row left. Counts go into `report`.
    """
    table = column.table
    (key,) = table.primary_key.columns
    raw = type_coerce(column, Text)
    keys = list(
        session.execute(
            select(key).where(key > after, column.is_not(None)).order_by(key).limit(limit)
        ).scalars()
    )
    if not keys:
        return None
    # Locked separately from the page query: SKIP LOCKED there would end a page early and hide
    # the rows behind a busy one from the count.
    rows = session.execute(
        select(key, raw).where(key.in_(keys)).with_for_update(skip_locked=True)
    ).all()
    report.busy += len(keys) - len(rows)
    changes = []
    for row_key, token in rows:
        try:
            new = rotate_token(token)
        except ConfigurationError:
            report.unreadable += 1
            continue
        if new is None:
            report.already_current += 1
        else:
            changes.append({"row_key": row_key, "token": new})
    if changes:
        values: dict[str, Any] = {column.name: type_coerce(bindparam("token"), Text)}
        if "updated_at" in table.c:
            # Re-encryption is maintenance, not a change of the row: its `onupdate` stamp would
            # tell merchants (status answers) and staff that every order and store just changed.
            values["updated_at"] = table.c.updated_at
        session.execute(update(table).where(key == bindparam("row_key")).values(values), changes)
        report.rotated += len(changes)
    session.flush()
    return int(keys[-1])
