"""Order search indexes: the staff search filters by store, merchant, trader, status, customer,
amount, dates, a requisite's last four digits and the merchant's order id, newest first or by amount.

Revision ID: 0004_order_search_indexes
Revises: 0003_selector_indexes
Create Date: 2026-12-04 17:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_order_search_indexes"
down_revision: str | None = "0004_team_statistics_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ORDER_HISTORY: dict[str, list[str]] = {
    "ix_order_history_created": ["created_at", "id"],
    "ix_order_history_status_created": ["status", "created_at", "id"],
    "ix_order_history_store_created": ["store_id", "created_at", "id"],
    "ix_order_history_merchant_created": ["merchant_id", "created_at", "id"],
    "ix_order_history_trader_created": ["trader_id", "created_at", "id"],
    "ix_order_history_amount": ["amount_fiat", "id"],
}


def upgrade() -> None:
    for name, columns in _ORDER_HISTORY.items():
        op.create_index(name, "order_history", columns, unique=False)
    op.create_index(
        "ix_order_history_customer_created",
        "order_history",
        ["customer_id", "created_at"],
        unique=False,
        postgresql_where=sa.text("customer_id IS NOT NULL"),
    )
    op.create_index(
        "ix_incoming_orders_merchant_order_id",
        "incoming_orders",
        ["merchant_order_id"],
        unique=False,
    )
    op.create_index("ix_req_traders_last4", "req_traders", ["req_last4"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_req_traders_last4", table_name="req_traders")
    op.drop_index("ix_incoming_orders_merchant_order_id", table_name="incoming_orders")
    op.drop_index("ix_order_history_customer_created", table_name="order_history")
    for name in reversed(_ORDER_HISTORY):
        op.drop_index(name, table_name="order_history")
