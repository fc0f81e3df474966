"""`recorded_statements`: the SQL statements sent through an engine or connection while a block
runs, for tests that count round trips or check which statement wrote what."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from jivapay.database.engine import get_engine


@contextmanager
def recorded_statements(bind: Any = None) -> Iterator[list[str]]:
    """The statements `bind` (the process engine by default) sends inside the block, in order."""
    target = get_engine() if bind is None else bind
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(target, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(target, "before_cursor_execute", record)
