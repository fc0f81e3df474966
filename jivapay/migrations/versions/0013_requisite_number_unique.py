"""One card or account, one trader: a requisite number (its keyed hash, `req_number_hash`) is unique
among the requisites not archived, whoever holds them. Until now it was unique per trader only
(`uq_req_traders_trader_number`, migration 0005), so two traders could register one card: its
limits counted twice and payers' money could go to a person who does not hold the card.

`uq_req_traders_number` (hash, where not archived) replaces the per-trader index, which it makes
redundant (a number unique among all traders is unique within each). The new index is built before
the old one is dropped, both `CONCURRENTLY` (outside the migration's transaction), so registrations
are neither blocked nor unguarded meanwhile.

A database where two requisites not archived already share a number cannot take the index: the
upgrade stops before building it, with the count and the requisite ids, and nothing changes.
Staff archive all but one requisite of each number (`POST /admin/requisites/{id}/status`,
`archived`), then run the upgrade again. If such a pair is written while the index builds (the
previous release checks per trader only), the build fails the same way and its invalid leftover is
dropped.

Until its replicas are replaced, the previous release refuses a number another trader holds with
its own-duplicate message ("you already have a requisite with this number"): the index answers it
and the release maps the violation to its 409.

Revision ID: 0013_requisite_number_unique
Revises: 0012_token_version
Create Date: 2026-12-07 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_requisite_number_unique"
down_revision: str | None = "0012_token_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

contract: dict[str, str] = {}

NEW_INDEX = "uq_req_traders_number"
OLD_INDEX = "uq_req_traders_trader_number"
_NOT_ARCHIVED = "status <> 'archived'"
# How many groups of ids the error lists; the count covers them all.
_LISTED = 20


class SharedRequisiteNumbers(RuntimeError):
    """Requisites not archived share a number: the unique index cannot be built."""


def shared_numbers(conn: sa.Connection) -> list[list[int]]:
    """The ids of the requisites not archived that share a number, one sorted list per number."""
    rows = conn.execute(
        sa.text(
            "SELECT array_agg(id ORDER BY id) AS ids FROM req_traders "
            "WHERE status <> 'archived' GROUP BY req_number_hash HAVING count(*) > 1 "
            "ORDER BY min(id)"
        )
    ).all()
    return [list(row.ids) for row in rows]


def check_no_shared_numbers(conn: sa.Connection) -> None:
    """Raise `SharedRequisiteNumbers`, saying how to resolve it, if any number is held twice."""
    groups = shared_numbers(conn)
    if not groups:
        return
    listed = "; ".join(", ".join(str(i) for i in ids) for ids in groups[:_LISTED])
    more = f" (and {len(groups) - _LISTED} more)" if len(groups) > _LISTED else ""
    raise SharedRequisiteNumbers(
        f"{len(groups)} requisite number(s) are held by more than one requisite that is not "
        f"archived, so {NEW_INDEX} (one number, one trader) cannot be built. Requisite ids "
        f"sharing a number: {listed}{more}. Archive all but one requisite of each number "
        "(POST /admin/requisites/{id}/status with status 'archived'), then run the upgrade "
        "again; nothing was changed."
    )


def _index_is_invalid(conn: sa.Connection, name: str) -> bool:
    return bool(
        conn.scalar(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": name},
        )
    )


def _drop(name: str) -> None:
    op.drop_index(name, table_name="req_traders", postgresql_concurrently=True, if_exists=True)


def upgrade() -> None:
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        conn = op.get_bind()
        # A build that failed earlier leaves an invalid index that `if_not_exists` would keep.
        if _index_is_invalid(conn, NEW_INDEX):
            _drop(NEW_INDEX)
        check_no_shared_numbers(conn)
        try:
            op.create_index(
                NEW_INDEX,
                "req_traders",
                ["req_number_hash"],
                unique=True,
                postgresql_where=sa.text(_NOT_ARCHIVED),
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        except sa.exc.IntegrityError:
            # A shared number written since the check: the failed build leaves an invalid index.
            _drop(NEW_INDEX)
            check_no_shared_numbers(conn)
            raise
        _drop(OLD_INDEX)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            OLD_INDEX,
            "req_traders",
            ["trader_id", "req_number_hash"],
            unique=True,
            postgresql_where=sa.text(_NOT_ARCHIVED),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        _drop(NEW_INDEX)
