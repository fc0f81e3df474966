"""Reconciliation at scale: how long `jivapay reconcile` takes on a book of `--orders` orders.

    python bench/reconcile.py [--orders 200000] [--runs 3]

On the server of `DATABASE_URL` it creates (and finally drops) `jivapay_bench_reconcile_<random>`,
fills it with the orders of `bench/merchant_statistics.py` (70 % completed, the rest canceled,
expired or pending, half PayIn and half PayOut, over a year), then writes the ledger those orders
imply, as the order engine would have: per completed order its four legs (store balance, trader
deposit, platform commission, trader fiat) for the amounts its row fixes, per pending PayIn the
trader's freeze, a large deposit on every account so no balance goes negative, and every
balance equal to the sum of its history. After `VACUUM ANALYZE` and one unmeasured call it
times the whole `reconciliation.reconcile()` call (which must find nothing) `--runs` times and
prints each and the median. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import scratch_database, use_database  # noqa: E402
from bench.merchant_statistics import build_world, fill  # noqa: E402

# The four legs of every completed order, as docs/money.md's "One order" gives them; the
# freeze of every pending PayIn; then a deposit per account and balances equal to their history.
_LEDGER = [
    """INSERT INTO balance_stores (store_id, crypto_currency_id)
       SELECT DISTINCT store_id, crypto_currency_id FROM order_history ON CONFLICT DO NOTHING""",
    """INSERT INTO balance_traders (trader_id, crypto_currency_id)
       SELECT DISTINCT trader_id, crypto_currency_id FROM order_history ON CONFLICT DO NOTHING""",
    """INSERT INTO balance_traders_fiat (trader_id, fiat_currency_id)
       SELECT DISTINCT trader_id, fiat_currency_id FROM order_history ON CONFLICT DO NOTHING""",
    """INSERT INTO balance_platform (crypto_currency_id)
       SELECT DISTINCT o.crypto_currency_id FROM order_history o
       WHERE NOT EXISTS (SELECT 1 FROM balance_platform p
                         WHERE p.crypto_currency_id = o.crypto_currency_id)""",
    """INSERT INTO balance_store_history (balance_store_id, incoming_order_id, order_id, operation,
           amount, frozen_delta, balance_after, frozen_after, created_at)
       SELECT b.id, o.incoming_order_id, o.id, o.order_type,
              CASE o.order_type WHEN 'payin' THEN o.amount_crypto - o.store_commission
                                ELSE -(o.amount_crypto + o.store_commission) END,
              0, 0, 0, o.completed_at
       FROM order_history o JOIN balance_stores b
         ON b.store_id = o.store_id AND b.crypto_currency_id = o.crypto_currency_id
       WHERE o.status = 'completed'""",
    """INSERT INTO balance_trader_crypto_history (balance_trader_id, incoming_order_id, order_id,
           operation, amount, frozen_delta, balance_after, frozen_after, created_at)
       SELECT b.id, o.incoming_order_id, o.id, o.order_type,
              CASE o.order_type WHEN 'payin' THEN o.trader_commission - o.amount_crypto
                                ELSE o.amount_crypto + o.trader_commission END,
              0, 0, 0, o.completed_at
       FROM order_history o JOIN balance_traders b
         ON b.trader_id = o.trader_id AND b.crypto_currency_id = o.crypto_currency_id
       WHERE o.status = 'completed'
       UNION ALL
       SELECT b.id, o.incoming_order_id, o.id, 'freeze', 0, o.hold_amount, 0, 0, o.created_at
       FROM order_history o JOIN balance_traders b
         ON b.trader_id = o.trader_id AND b.crypto_currency_id = o.crypto_currency_id
       WHERE o.status = 'pending' AND o.order_type = 'payin'""",
    """INSERT INTO balance_platform_history (balance_platform_id, incoming_order_id, order_id,
           operation, amount, balance_after, created_at)
       SELECT b.id, o.incoming_order_id, o.id, 'commission', o.platform_profit, 0, o.completed_at
       FROM order_history o JOIN balance_platform b ON b.crypto_currency_id = o.crypto_currency_id
       WHERE o.status = 'completed'""",
    """INSERT INTO balance_trader_fiat_history (balance_trader_fiat_id, incoming_order_id, order_id,
           operation, amount, balance_after, created_at)
       SELECT b.id, o.incoming_order_id, o.id, o.order_type,
              CASE o.order_type WHEN 'payin' THEN o.amount_fiat ELSE -o.amount_fiat END,
              0, o.completed_at
       FROM order_history o JOIN balance_traders_fiat b
         ON b.trader_id = o.trader_id AND b.fiat_currency_id = o.fiat_currency_id
       WHERE o.status = 'completed'""",
    """INSERT INTO balance_store_history (balance_store_id, operation, amount, frozen_delta,
           balance_after, frozen_after)
       SELECT id, 'deposit', 1000000000, 0, 0, 0 FROM balance_stores""",
    """INSERT INTO balance_trader_crypto_history (balance_trader_id, operation, amount,
           frozen_delta, balance_after, frozen_after)
       SELECT id, 'deposit', 1000000000, 0, 0, 0 FROM balance_traders""",
    """UPDATE balance_stores b SET balance = h.amount, frozen = h.frozen
       FROM (SELECT balance_store_id AS id, SUM(amount) AS amount, SUM(frozen_delta) AS frozen
             FROM balance_store_history GROUP BY 1) h WHERE h.id = b.id""",
    """UPDATE balance_traders b SET balance = h.amount, frozen = h.frozen
       FROM (SELECT balance_trader_id AS id, SUM(amount) AS amount, SUM(frozen_delta) AS frozen
             FROM balance_trader_crypto_history GROUP BY 1) h WHERE h.id = b.id""",
    """UPDATE balance_traders_fiat b SET balance = h.amount
       FROM (SELECT balance_trader_fiat_id AS id, SUM(amount) AS amount
             FROM balance_trader_fiat_history GROUP BY 1) h WHERE h.id = b.id""",
    """UPDATE balance_platform b SET balance = h.amount
       FROM (SELECT balance_platform_id AS id, SUM(amount) AS amount
             FROM balance_platform_history GROUP BY 1) h WHERE h.id = b.id""",
]


def write_ledger() -> int:
    """The ledger of the filled orders; returns the number of history rows."""
    from jivapay.database.engine import get_engine

    started = time.perf_counter()
    engine = get_engine()
    with engine.begin() as conn:
        for statement in _LEDGER:
            conn.execute(text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        rows = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM balance_store_history)"
                " + (SELECT count(*) FROM balance_trader_crypto_history)"
                " + (SELECT count(*) FROM balance_platform_history)"
                " + (SELECT count(*) FROM balance_trader_fiat_history)"
            )
        ).scalar_one()
    print(f"ledger: {rows:,} history rows in {time.perf_counter() - started:.1f} s", flush=True)
    return int(rows)


def timed_reconcile() -> tuple[float, int]:
    """Seconds of one whole `reconcile()` call, and how many discrepancies it found."""
    from jivapay.database.utils import read_session
    from jivapay.services.reconciliation import reconcile

    with read_session() as session:
        started = time.perf_counter()
        found = reconcile(session)
        seconds = time.perf_counter() - started
    return seconds, len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--merchants", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with scratch_database("jivapay_bench_reconcile") as url:
        use_database(url)
        world = build_world(args.merchants)
        fill(world, args.orders)
        write_ledger()
        timed_reconcile()  # warms the caches, unmeasured
        times = []
        for _ in range(args.runs):
            seconds, found = timed_reconcile()
            times.append(seconds)
            print(f"  reconcile: {seconds:6.2f} s, {found} discrepancies", flush=True)
        print(f"median of {args.runs}: {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
