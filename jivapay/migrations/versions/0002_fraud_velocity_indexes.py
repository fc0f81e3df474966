"""fraud velocity indexes: intake orders per store customer and per IP over time

Revision ID: 0002_fraud_velocity_indexes
Revises: 0001_initial
Create Date: 2026-11-27 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_fraud_velocity_indexes"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_incoming_orders_customer_created",
        "incoming_orders",
        ["store_id", "customer_id", "created_at"],
        unique=False,
        postgresql_where=sa.text("customer_id IS NOT NULL"),
    )
    op.create_index(
        "ix_incoming_orders_ip_created",
        "incoming_orders",
        ["customer_ip", "created_at"],
        unique=False,
        postgresql_where=sa.text("customer_ip IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_incoming_orders_ip_created",
        table_name="incoming_orders",
        postgresql_where=sa.text("customer_ip IS NOT NULL"),
    )
    op.drop_index(
        "ix_incoming_orders_customer_created",
        table_name="incoming_orders",
        postgresql_where=sa.text("customer_id IS NOT NULL"),
    )
