"""Merchant statistics indexes: one merchant's orders by time with the summed columns included
(index-only scan), and the never-assigned intake orders per store and time.

Revision ID: 0004_merchant_statistics_indexes
Revises: 0003_selector_indexes
Create Date: 2026-12-04 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_merchant_statistics_indexes"
down_revision: str | None = "0003_selector_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_order_history_merchant_stats",
        "order_history",
        ["merchant_id", "created_at"],
        unique=False,
        postgresql_include=[
            "store_id",
            "order_type",
            "status",
            "amount_fiat",
            "amount_crypto",
            "store_commission",
            "completed_at",
        ],
    )
    op.create_index(
        "ix_incoming_orders_store_unassigned",
        "incoming_orders",
        ["store_id", "created_at"],
        unique=False,
        postgresql_include=["order_type", "status"],
        postgresql_where=sa.text("status <> 'assigned'"),
    )


def downgrade() -> None:
    op.drop_index("ix_incoming_orders_store_unassigned", table_name="incoming_orders")
    op.drop_index("ix_order_history_merchant_stats", table_name="order_history")
