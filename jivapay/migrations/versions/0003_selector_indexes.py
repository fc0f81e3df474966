"""Selector rotation index: requisites in priority and round-robin order; newest trader commission.

Revision ID: 0003_selector_indexes
Revises: 0002_fraud_velocity_indexes
Create Date: 2026-11-26 19:58:26.872065
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_selector_indexes"
down_revision: str | None = "0002_fraud_velocity_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(
        op.f("ix_req_traders_selector"),
        table_name="req_traders",
        postgresql_where="(((status)::text = 'approved'::text) AND (NOT is_excluded_from_distribution))",
    )
    op.create_index(
        "ix_req_traders_rotation",
        "req_traders",
        [
            "fiat_currency_id",
            "distribution_weight",
            sa.literal_column("last_used_at NULLS FIRST"),
            "id",
        ],
        unique=False,
        postgresql_where=sa.text("status = 'approved' AND NOT is_excluded_from_distribution"),
    )
    op.drop_index(op.f("ix_trader_commissions_trader_id"), table_name="trader_commissions")
    op.create_index(
        "ix_trader_commissions_newest",
        "trader_commissions",
        ["trader_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_trader_commissions_newest", table_name="trader_commissions")
    op.create_index(
        op.f("ix_trader_commissions_trader_id"), "trader_commissions", ["trader_id"], unique=False
    )
    op.drop_index(
        "ix_req_traders_rotation",
        table_name="req_traders",
        postgresql_where=sa.text("status = 'approved' AND NOT is_excluded_from_distribution"),
    )
    op.create_index(
        op.f("ix_req_traders_selector"),
        "req_traders",
        ["fiat_currency_id", "payment_method_id", "last_used_at"],
        unique=False,
        postgresql_where="(((status)::text = 'approved'::text) AND (NOT is_excluded_from_distribution))",
    )
