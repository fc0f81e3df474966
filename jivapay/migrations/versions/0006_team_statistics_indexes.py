"""Team statistics index: order history per trader and creation time, covering the grouped counts
and sums of the trader and teamlead statistics (index-only scans).

Revision ID: 0004_team_statistics_indexes
Revises: 0004_requisite_number_hash
Create Date: 2026-12-04 17:15:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_team_statistics_indexes"
down_revision: str | None = "0004_requisite_number_hash"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INCLUDE = [
    "status",
    "order_type",
    "fiat_currency_id",
    "crypto_currency_id",
    "amount_fiat",
    "amount_crypto",
    "trader_commission",
    "disputed_at",
]


def upgrade() -> None:
    op.create_index(
        "ix_order_history_trader_created_stats",
        "order_history",
        ["trader_id", "created_at"],
        unique=False,
        postgresql_include=_INCLUDE,
    )


def downgrade() -> None:
    op.drop_index("ix_order_history_trader_created_stats", table_name="order_history")
