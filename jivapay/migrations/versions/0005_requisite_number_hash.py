"""Requisite number hash: a keyed hash of each requisite's number, unique per trader among the
requisites not archived, so the same card or account cannot be registered twice.

Existing rows are backfilled by decrypting their number with `DATA_ENCRYPTION_KEY`.

Revision ID: 0004_requisite_number_hash
Revises: 0003_selector_indexes
Create Date: 2026-12-04 17:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from jivapay.database.types import decrypt_value, fingerprint

revision: str = "0004_requisite_number_hash"
down_revision: str | None = "0004_merchant_statistics_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Changes the previous release cannot live with (tests/database/test_migrations.py checks the list).
contract = {
    "new required column req_traders.req_number_hash": (
        "written before the expand/contract check: the previous release cannot register a "
        "requisite between this migration and the replacement of its replicas (its inserts omit "
        "the hash); accepted then. Done today, the column would stay nullable for one release."
    ),
}


def upgrade() -> None:
    op.add_column("req_traders", sa.Column("req_number_hash", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, req_number FROM req_traders")).all()
    for row in rows:
        conn.execute(
            sa.text("UPDATE req_traders SET req_number_hash = :h WHERE id = :id"),
            {"h": fingerprint(decrypt_value(row.req_number)), "id": row.id},
        )
    op.alter_column("req_traders", "req_number_hash", nullable=False)
    op.create_index(
        "uq_req_traders_trader_number",
        "req_traders",
        ["trader_id", "req_number_hash"],
        unique=True,
        postgresql_where=sa.text("status <> 'archived'"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_req_traders_trader_number",
        table_name="req_traders",
        postgresql_where=sa.text("status <> 'archived'"),
    )
    op.drop_column("req_traders", "req_number_hash")
