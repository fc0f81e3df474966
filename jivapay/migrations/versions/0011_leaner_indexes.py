"""Fewer indexes on the assignment's insert path: every assignment inserts one `order_history` row
(an entry in each of its indexes) and updates its requisite's `req_traders` row with a new
`last_used_at`, an indexed column, so the update writes an entry in each of that table's indexes
too.

- `ix_order_history_merchant_created` (merchant, time, id: the staff search) and
  `ix_order_history_merchant_stats` (merchant, time, with the statistics' columns included) become
  one `ix_order_history_merchant_period` (merchant, time, id, with those columns included); the
  trader's pair likewise becomes `ix_order_history_trader_period`;
- `ix_order_history_merchant_id` goes: the merchant period index starts with the same column;
- `ix_req_traders_req_last4` goes: `ix_req_traders_last4` (migration 0007) is the same index.

And one index more, off the write path: `ix_fraud_lists_ip_networks`, the block and allow lists'
network entries, which the fraud check reads for every order with an address (without it, every IP
entry).

Order history: 17 -> 14 indexes; requisites 7 -> 6. The new indexes are built and the old ones
dropped `CONCURRENTLY` (outside the migration's transaction), so a deploy blocks no assignment
while they build; the previous release's queries are served by the new indexes as well.

Revision ID: 0011_leaner_indexes
Revises: 0010_claim_idempotency_key
Create Date: 2026-12-07 03:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_leaner_indexes"
down_revision: str | None = "0010_claim_idempotency_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

contract: dict[str, str] = {}

_MERCHANT_INCLUDE = [
    "store_id",
    "order_type",
    "status",
    "amount_fiat",
    "amount_crypto",
    "store_commission",
    "completed_at",
]
_TRADER_INCLUDE = [
    "status",
    "order_type",
    "fiat_currency_id",
    "crypto_currency_id",
    "amount_fiat",
    "amount_crypto",
    "trader_commission",
    "disputed_at",
]
# (name, table, columns, included columns) of each index this migration drops, for the downgrade.
_DROPPED: list[tuple[str, str, list[str], list[str] | None]] = [
    (
        "ix_order_history_merchant_created",
        "order_history",
        ["merchant_id", "created_at", "id"],
        None,
    ),
    (
        "ix_order_history_merchant_stats",
        "order_history",
        ["merchant_id", "created_at"],
        _MERCHANT_INCLUDE,
    ),
    ("ix_order_history_merchant_id", "order_history", ["merchant_id"], None),
    ("ix_order_history_trader_created", "order_history", ["trader_id", "created_at", "id"], None),
    (
        "ix_order_history_trader_created_stats",
        "order_history",
        ["trader_id", "created_at"],
        _TRADER_INCLUDE,
    ),
    ("ix_req_traders_req_last4", "req_traders", ["req_last4"], None),
]
_CREATED: list[tuple[str, str, list[str], list[str] | None]] = [
    (
        "ix_order_history_merchant_period",
        "order_history",
        ["merchant_id", "created_at", "id"],
        _MERCHANT_INCLUDE,
    ),
    (
        "ix_order_history_trader_period",
        "order_history",
        ["trader_id", "created_at", "id"],
        _TRADER_INCLUDE,
    ),
]


def _create(indexes: list[tuple[str, str, list[str], list[str] | None]]) -> None:
    for name, table, columns, include in indexes:
        op.create_index(
            name,
            table,
            columns,
            unique=False,
            postgresql_include=include or [],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def _drop(indexes: list[tuple[str, str, list[str], list[str] | None]]) -> None:
    for name, table, _columns, _include in indexes:
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


def upgrade() -> None:
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        _create(_CREATED)
        _drop(_DROPPED)
        op.create_index(
            "ix_fraud_lists_ip_networks",
            "fraud_lists",
            ["id"],
            unique=False,
            postgresql_where=sa.text("kind = 'ip' AND value LIKE '%/%'"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_fraud_lists_ip_networks",
            table_name="fraud_lists",
            postgresql_concurrently=True,
            if_exists=True,
        )
        _create(_DROPPED)
        _drop(_CREATED)
