"""Staff idempotency keys: a key belongs to a store (gateway) or to a staff user (money moves).

Revision ID: 0008_staff_idempotency_keys
Revises: 0004_order_search_indexes
Create Date: 2026-12-04 18:35:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_staff_idempotency_keys"
down_revision: str | None = "0004_order_search_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("user_id", sa.BigInteger(), nullable=True))
    op.alter_column("idempotency_keys", "store_id", existing_type=sa.BigInteger(), nullable=True)
    op.create_foreign_key(
        op.f("fk_idempotency_keys_user_id_users"),
        "idempotency_keys",
        "users",
        ["user_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_unique_constraint(
        op.f("uq_idempotency_keys_user_id_key"), "idempotency_keys", ["user_id", "key"]
    )
    op.create_check_constraint(
        op.f("ck_idempotency_keys_one_owner"),
        "idempotency_keys",
        "num_nonnulls(store_id, user_id) = 1",
    )


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys WHERE store_id IS NULL")
    op.drop_constraint(op.f("ck_idempotency_keys_one_owner"), "idempotency_keys", type_="check")
    op.drop_constraint(op.f("uq_idempotency_keys_user_id_key"), "idempotency_keys", type_="unique")
    op.drop_constraint(
        op.f("fk_idempotency_keys_user_id_users"), "idempotency_keys", type_="foreignkey"
    )
    op.alter_column("idempotency_keys", "store_id", existing_type=sa.BigInteger(), nullable=False)
    op.drop_column("idempotency_keys", "user_id")
