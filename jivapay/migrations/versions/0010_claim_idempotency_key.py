"""`claim_idempotency_key`: an `Idempotency-Key`'s advisory lock and its row, read in one call.

The row is read by a statement of its own inside the function, which a VOLATILE function runs
with a snapshot taken after the lock: it sees the row of every request that held the lock before,
even when the calling statement (the gateway's store authentication) started earlier. Reading the
row in the calling statement itself would use that statement's older snapshot.

Revision ID: 0010_claim_idempotency_key
Revises: 0009_order_stats_rollup
Create Date: 2026-12-06 14:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_claim_idempotency_key"
down_revision: str | None = "0009_order_stats_rollup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `{"locked": false}` when another transaction holds the lock; otherwise `{"locked": true, "row":
# the key's row or null}`. Exactly one of the owners is given (the table's check constraint).
_FUNCTION = """
CREATE FUNCTION claim_idempotency_key(
    lock_id bigint, owner_store_id bigint, owner_user_id bigint, idempotency_key text
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_row jsonb;
BEGIN
    IF NOT pg_try_advisory_xact_lock(lock_id) THEN
        RETURN '{"locked": false}'::jsonb;
    END IF;
    -- One plain lookup per owner kind, so that each is a unique index scan with a generic plan.
    IF owner_store_id IS NOT NULL THEN
        SELECT to_jsonb(k) INTO found_row FROM idempotency_keys k
         WHERE k.store_id = owner_store_id AND k.key = idempotency_key;
    ELSE
        SELECT to_jsonb(k) INTO found_row FROM idempotency_keys k
         WHERE k.user_id = owner_user_id AND k.key = idempotency_key;
    END IF;
    RETURN jsonb_build_object('locked', true, 'row', found_row);
END $$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION claim_idempotency_key(bigint, bigint, bigint, text)")
