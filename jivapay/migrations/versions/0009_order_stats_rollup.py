"""Order statistics rollup: `order_stats_store` (merchant view) and `order_stats_trader` (trader and
teamlead view) hold counts and sums of `order_history` per UTC day and per UTC month, kept by a
deferred constraint trigger on `order_history` and backfilled here from the existing orders.

Revision ID: 0009_order_stats_rollup
Revises: 0008_staff_idempotency_keys
Create Date: 2026-12-04 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_order_stats_rollup"
down_revision: str | None = "0008_staff_idempotency_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = {
    "order_stats_store": ["merchant_id", "grain", "period_start", "store_id"],
    "order_stats_trader": ["trader_id", "grain", "period_start"],
}
_COMMON_KEYS = ["order_type", "status", "fiat_currency_id", "crypto_currency_id"]
_MEASURES = [
    "orders",
    "disputes",
    "amount_fiat",
    "amount_crypto",
    "store_commission",
    "trader_commission",
    "platform_profit",
    "completion_seconds",
]

# One order's share of a row, times `delta` (+1 for its current version, -1 for the version it
# leaves). Written per table for the day and the month the order was created in (UTC).
_ADD_FUNCTION = """
CREATE FUNCTION order_stats_add(o order_history, delta integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    local_created timestamp := o.created_at AT TIME ZONE 'UTC';
    seconds numeric := COALESCE(EXTRACT(epoch FROM o.completed_at - o.created_at), 0);
BEGIN
    INSERT INTO order_stats_store AS s (merchant_id, grain, period_start, store_id, order_type,
        status, fiat_currency_id, crypto_currency_id, orders, disputes, amount_fiat,
        amount_crypto, store_commission, trader_commission, platform_profit, completion_seconds)
    SELECT o.merchant_id, g.grain, g.period_start, o.store_id, o.order_type, o.status,
           o.fiat_currency_id, o.crypto_currency_id, delta,
           delta * (o.disputed_at IS NOT NULL)::integer, delta * o.amount_fiat,
           delta * o.amount_crypto, delta * o.store_commission, delta * o.trader_commission,
           delta * o.platform_profit, delta * seconds
    FROM (VALUES ('day', local_created::date),
                 ('month', date_trunc('month', local_created)::date)) AS g (grain, period_start)
    ON CONFLICT (merchant_id, grain, period_start, store_id, order_type, status,
                 fiat_currency_id, crypto_currency_id)
    DO UPDATE SET orders = s.orders + EXCLUDED.orders,
                  disputes = s.disputes + EXCLUDED.disputes,
                  amount_fiat = s.amount_fiat + EXCLUDED.amount_fiat,
                  amount_crypto = s.amount_crypto + EXCLUDED.amount_crypto,
                  store_commission = s.store_commission + EXCLUDED.store_commission,
                  trader_commission = s.trader_commission + EXCLUDED.trader_commission,
                  platform_profit = s.platform_profit + EXCLUDED.platform_profit,
                  completion_seconds = s.completion_seconds + EXCLUDED.completion_seconds;
    INSERT INTO order_stats_trader AS s (trader_id, grain, period_start, order_type, status,
        fiat_currency_id, crypto_currency_id, orders, disputes, amount_fiat, amount_crypto,
        store_commission, trader_commission, platform_profit, completion_seconds)
    SELECT o.trader_id, g.grain, g.period_start, o.order_type, o.status, o.fiat_currency_id,
           o.crypto_currency_id, delta, delta * (o.disputed_at IS NOT NULL)::integer,
           delta * o.amount_fiat, delta * o.amount_crypto, delta * o.store_commission,
           delta * o.trader_commission, delta * o.platform_profit, delta * seconds
    FROM (VALUES ('day', local_created::date),
                 ('month', date_trunc('month', local_created)::date)) AS g (grain, period_start)
    ON CONFLICT (trader_id, grain, period_start, order_type, status, fiat_currency_id,
                 crypto_currency_id)
    DO UPDATE SET orders = s.orders + EXCLUDED.orders,
                  disputes = s.disputes + EXCLUDED.disputes,
                  amount_fiat = s.amount_fiat + EXCLUDED.amount_fiat,
                  amount_crypto = s.amount_crypto + EXCLUDED.amount_crypto,
                  store_commission = s.store_commission + EXCLUDED.store_commission,
                  trader_commission = s.trader_commission + EXCLUDED.trader_commission,
                  platform_profit = s.platform_profit + EXCLUDED.platform_profit,
                  completion_seconds = s.completion_seconds + EXCLUDED.completion_seconds;
END
$$
"""

_TRIGGER_FUNCTION = """
CREATE FUNCTION order_stats_rollup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.created_at, OLD.merchant_id, OLD.store_id, OLD.trader_id,
            OLD.order_type, OLD.status, OLD.fiat_currency_id, OLD.crypto_currency_id,
            OLD.disputed_at IS NULL, OLD.completed_at, OLD.amount_fiat, OLD.amount_crypto,
            OLD.store_commission, OLD.trader_commission, OLD.platform_profit)
        IS NOT DISTINCT FROM (NEW.created_at, NEW.merchant_id, NEW.store_id, NEW.trader_id,
            NEW.order_type, NEW.status, NEW.fiat_currency_id, NEW.crypto_currency_id,
            NEW.disputed_at IS NULL, NEW.completed_at, NEW.amount_fiat, NEW.amount_crypto,
            NEW.store_commission, NEW.trader_commission, NEW.platform_profit) THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM order_stats_add(OLD, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM order_stats_add(NEW, 1);
    END IF;
    RETURN NULL;
END
$$
"""

# Deferred: the rollup rows are locked at commit, after every other lock of the transaction, so
# they never take part in the lock order of docs/architecture.md and are held for the commit only.
_TRIGGER = """
CREATE CONSTRAINT TRIGGER order_stats_rollup
AFTER INSERT OR DELETE OR UPDATE OF created_at, merchant_id, store_id, trader_id, order_type,
    status, fiat_currency_id, crypto_currency_id, disputed_at, completed_at, amount_fiat,
    amount_crypto, store_commission, trader_commission, platform_profit
ON order_history DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION order_stats_rollup()
"""

_BACKFILL = """
INSERT INTO {table} ({keys}, {common}, {measures})
SELECT {o_keys}, {common}, count(*), count(disputed_at), sum(amount_fiat), sum(amount_crypto),
       sum(store_commission), sum(trader_commission), sum(platform_profit),
       COALESCE(sum(EXTRACT(epoch FROM completed_at - created_at)), 0)
FROM order_history
CROSS JOIN LATERAL (VALUES
    ('day', (created_at AT TIME ZONE 'UTC')::date),
    ('month', date_trunc('month', created_at AT TIME ZONE 'UTC')::date)
) AS g (grain, period_start)
GROUP BY {o_keys}, {common}
"""


def _create_table(name: str) -> None:
    own = [sa.Column(k, sa.BigInteger(), nullable=False) for k in _KEYS[name] if k.endswith("_id")]
    op.create_table(
        name,
        *own,
        sa.Column("grain", sa.String(length=5), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("order_type", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("fiat_currency_id", sa.BigInteger(), nullable=False),
        sa.Column("crypto_currency_id", sa.BigInteger(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("disputes", sa.BigInteger(), nullable=False),
        sa.Column("amount_fiat", sa.Numeric(precision=38, scale=2), nullable=False),
        sa.Column("amount_crypto", sa.Numeric(precision=38, scale=8), nullable=False),
        sa.Column("store_commission", sa.Numeric(precision=38, scale=8), nullable=False),
        sa.Column("trader_commission", sa.Numeric(precision=38, scale=8), nullable=False),
        sa.Column("platform_profit", sa.Numeric(precision=38, scale=8), nullable=False),
        sa.Column("completion_seconds", sa.Numeric(precision=38, scale=6), nullable=False),
        sa.CheckConstraint("grain IN ('day', 'month')", name=op.f(f"ck_{name}_grain_valid")),
        sa.PrimaryKeyConstraint(*_KEYS[name], *_COMMON_KEYS, name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    for name in _KEYS:
        _create_table(name)
    op.execute(_ADD_FUNCTION)
    op.execute(_TRIGGER_FUNCTION)
    op.execute(_TRIGGER)
    for name, keys in _KEYS.items():
        op.execute(
            _BACKFILL.format(
                table=name,
                keys=", ".join(keys),
                o_keys=", ".join(keys),
                common=", ".join(_COMMON_KEYS),
                measures=", ".join(_MEASURES),
            )
        )


def downgrade() -> None:
    op.execute("DROP TRIGGER order_stats_rollup ON order_history")
    op.execute("DROP FUNCTION order_stats_rollup()")
    op.execute("DROP FUNCTION order_stats_add(order_history, integer)")
    for name in reversed(list(_KEYS)):
        op.drop_table(name)
