"""Merchant statistics at 1,000,000 orders: plans and timings of `GET /merchant/statistics`.

    python bench/merchant_statistics.py [--orders 1000000] [--merchants 50] [--runs 7]

On the server of `DATABASE_URL` it creates (and finally drops) `jivapay_bench_stats_<random>`,
migrates it (so the statistics indexes of migration 0004 exist), builds `--merchants` merchants
with two stores each and 20 traders with requisites, then writes `--orders` orders with one
`INSERT ... SELECT generate_series` spread over the last 365 days: one "large" merchant gets a fifth
of them (about 200k a year), the others share the rest; 70 % completed, 15 % canceled, 10 %
expired, 5 % still pending, half PayIn and half PayOut; and 3 % more intake orders that were never
assigned (`failed`), with triggers off (`session_replication_role = replica`), then computes the
rollup as migration 0009's backfill does (`order_stats_rollup.rebuild`) and counts the rows where
it and a fresh aggregation of `order_history` differ (`order_stats_rollup.drift`, expected 0). After `VACUUM ANALYZE` it prints,
for the large and a small merchant and for the last 30 and 366 days: `EXPLAIN (ANALYZE, BUFFERS)`
of every statistics statement (`merchant_statistics.order_stats_statements`: the partial UTC days
at the ends from `order_history`, the whole days and months from the rollup; and
`intake_stats_query`), and the median and max time of the whole `merchant_statistics()` service
call over `--runs` runs with PASS/FAIL against 100 ms (median). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text, union_all
from sqlalchemy.exc import DBAPIError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import scratch_database, use_database  # noqa: E402

D = Decimal
DAY_SECONDS = 86_400


def build_world(merchants: int) -> dict[str, Any]:
    """Reference data, merchants with two stores each, traders with one requisite each."""
    from jivapay.database.utils import atomic_transaction
    from tests.factories import make_reference, make_requisite, make_store, make_trader

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        stores: list[tuple[int, int]] = []  # (store id, merchant id)
        for _ in range(merchants):
            first = make_store(session, ref)
            second = make_store(session, ref)
            second.store.merchant_id = first.merchant.id  # two stores per merchant
            stores += [(first.store.id, first.merchant.id), (second.store.id, first.merchant.id)]
        for _ in range(20):
            make_requisite(session, make_trader(session, ref, deposit=None), ref)
        session.flush()
        return {"stores": stores, "fiat": ref.fiat.id, "crypto": ref.crypto.id}


# Store k of the stores table: a fifth of the orders go to stores 0 and 1 (the large merchant),
# the rest round-robin over the others. Type and status do not follow the store (g / 10, g / 5),
# so every store has both types and every status each day, as a live one does: the number of
# rollup rows a period reads depends on it.
_FILL = """
WITH stores AS (
    SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, merchant_id FROM merchant_stores
), reqs AS (
    SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, trader_id, payment_method_id, bank_id
    FROM req_traders
), src AS (
    SELECT g AS i, 'st_' || g AS pid,
           CASE WHEN g % 5 = 0 THEN g % 2
                ELSE 2 + g % ((SELECT count(*) FROM stores) - 2) END AS sk,
           CASE WHEN (g / 10) % 2 = 0 THEN 'payin' ELSE 'payout' END AS kind,
           (100 + (g * 37) % 4900)::numeric(20, 2) AS fiat,
           date_trunc('second', now())
               - make_interval(secs => ((g::bigint * 7919) % (365 * 86400))) AS at,
           CASE WHEN (g / 5) % 20 < 14 THEN 'completed' WHEN (g / 5) % 20 < 17 THEN 'canceled'
                WHEN (g / 5) % 20 < 19 THEN 'expired' ELSE 'pending' END AS st
    FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint) - 1) g
), ins AS (
    INSERT INTO incoming_orders (public_id, store_id, order_type, fiat_currency_id,
        crypto_currency_id, amount_fiat, amount_crypto, exchange_rate, store_commission_rate,
        store_commission, merchant_order_id, status, last_attempt_at, created_at, updated_at)
    SELECT s.pid, st.id, s.kind, :fiat, :crypto, s.fiat, s.fiat / 100, 100, 5,
           round(s.fiat / 100 * 0.05, 8), s.pid, 'assigned', s.at, s.at, s.at
    FROM src s JOIN stores st ON st.k = s.sk
    RETURNING id, public_id, store_id
)
INSERT INTO order_history (public_id, incoming_order_id, store_id, merchant_id, trader_id,
    requisite_id, payment_method_id, bank_id, fiat_currency_id, crypto_currency_id, order_type,
    amount_fiat, amount_crypto, exchange_rate, store_commission_rate, trader_commission_rate,
    store_commission, trader_commission, platform_profit, hold_amount, turnover_bucket,
    turnover_day, status, expires_at, completed_at, canceled_at, cancellation_reason,
    created_at, updated_at)
SELECT ins.public_id, ins.id, ins.store_id, st.merchant_id, r.trader_id, r.id,
       r.payment_method_id, r.bank_id, :fiat, :crypto, s.kind, s.fiat, s.fiat / 100, 100, 5, 3,
       round(s.fiat / 100 * 0.05, 8), round(s.fiat / 100 * 0.03, 8),
       round(s.fiat / 100 * 0.05, 8) - round(s.fiat / 100 * 0.03, 8),
       s.fiat / 100 - round(s.fiat / 100 * 0.03, 8),
       date_trunc('minute', s.at), (s.at AT TIME ZONE 'UTC')::date, s.st,
       s.at + interval '15 minutes',
       CASE WHEN s.st = 'completed' THEN s.at + make_interval(secs => 60 + s.i % 1200) END,
       CASE WHEN s.st IN ('canceled', 'expired') THEN s.at + interval '15 minutes' END,
       CASE WHEN s.st IN ('canceled', 'expired') THEN s.st END,
       s.at, s.at
FROM ins JOIN src s ON s.pid = ins.public_id
JOIN stores st ON st.id = ins.store_id
JOIN reqs r ON r.k = s.i % (SELECT count(*) FROM reqs)
"""

# Intake orders that never reached a trader.
_FAILED = """
WITH stores AS (SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM merchant_stores)
INSERT INTO incoming_orders (public_id, store_id, order_type, fiat_currency_id,
    crypto_currency_id, amount_fiat, amount_crypto, exchange_rate, store_commission_rate,
    store_commission, merchant_order_id, status, failure_reason, created_at, updated_at)
SELECT 'sf_' || g, st.id, CASE WHEN g % 2 = 0 THEN 'payin' ELSE 'payout' END, :fiat, :crypto,
       500, 5, 100, 5, 0.25, 'sf_' || g, 'failed', 'requisite_not_found',
       now() - make_interval(secs => ((g::bigint * 7919) % (365 * 86400))),
       now() - make_interval(secs => ((g::bigint * 7919) % (365 * 86400)))
FROM generate_series(1, :n) g
JOIN stores st ON st.k = CASE WHEN g % 5 = 0 THEN g % 2
                              ELSE 2 + g % ((SELECT count(*) FROM stores) - 2) END
"""


def fill(world: dict[str, Any], orders: int) -> None:
    from jivapay.database.engine import get_engine

    engine = get_engine()
    chunk = 250_000
    started = time.perf_counter()
    for start in range(0, orders, chunk):
        with engine.begin() as conn:
            # Off for the bulk load, rebuilt below: a per-row rollup trigger firing 250,000 times
            # in one transaction rewrites the same rollup rows over and over (a live order is one
            # transaction, one firing). Superuser only; otherwise the trigger does the work.
            with contextlib.suppress(DBAPIError), conn.begin_nested():
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(
                text(_FILL),
                {
                    "start": start,
                    "stop": min(start + chunk, orders),
                    "fiat": world["fiat"],
                    "crypto": world["crypto"],
                },
            )
        print(f"  {min(start + chunk, orders):>9,} orders written", flush=True)
    with engine.begin() as conn:
        conn.execute(
            text(_FAILED),
            {"n": orders * 3 // 100, "fiat": world["fiat"], "crypto": world["crypto"]},
        )
    from jivapay.database.utils import read_session
    from jivapay.services import order_stats_rollup

    with engine.begin() as conn:
        order_stats_rollup.rebuild(conn)
    print(f"  filled and rolled up in {time.perf_counter() - started:.1f} s", flush=True)

    t0 = time.perf_counter()
    with read_session() as session:
        drifted = len(order_stats_rollup.drift(session))
    print(
        f"  rollup rows differing from a fresh aggregation: {drifted} "
        f"(checked in {time.perf_counter() - t0:.1f} s)"
    )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        sizes = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM order_history), (SELECT count(*) FROM incoming_orders),"
                " pg_size_pretty(pg_relation_size('ix_order_history_merchant_period')),"
                " pg_size_pretty(pg_relation_size('ix_incoming_orders_store_unassigned')),"
                " (SELECT count(*) FROM order_stats_store),"
                " pg_size_pretty(pg_total_relation_size('order_stats_store'))"
            )
        ).one()
    print(
        f"filled in {time.perf_counter() - started:.1f} s: {sizes[0]:,} orders, "
        f"{sizes[1]:,} intake rows; index sizes: order_history stats {sizes[2]}, "
        f"unassigned intake {sizes[3]}; rollup order_stats_store {sizes[4]:,} rows, {sizes[5]}"
    )


def explain(stmt: Any) -> str:
    from jivapay.database.engine import get_engine

    engine = get_engine()
    compiled = stmt.compile(dialect=engine.dialect)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), compiled.params
        ).all()
    return "\n".join("    " + r[0] for r in rows)


def measure(merchant_id: int, label: str, days: int, runs: int) -> float:
    from jivapay.database.base import utcnow
    from jivapay.database.utils import read_session
    from jivapay.enums import Role
    from jivapay.security import Principal
    from jivapay.services import merchant_statistics as ms

    principal = Principal(user_id=0, role=Role.MERCHANT, email="bench", profile_id=merchant_id)
    end = utcnow()
    start = end - timedelta(days=days)
    print(f"\n== {label} merchant {merchant_id}, last {days} days")
    with read_session() as session:
        stmts = ms.order_stats_statements(session, principal, start, end, None)
    # As the service runs them: one UNION ALL of the partial days (order_history) and the rollup.
    print(f"  assigned orders, {len(stmts)} parts UNION ALL (partial days, then the rollup):")
    print(explain(stmts[0] if len(stmts) == 1 else union_all(*stmts)))
    print("  intake_stats_query:")
    print(explain(ms.intake_stats_query(principal, start, end, None)))
    samples = []
    result = None
    for _ in range(runs):
        with read_session() as session:
            t0 = time.perf_counter()
            result = ms.merchant_statistics(
                session, principal=principal, date_from=start, date_to=end
            )
            samples.append(time.perf_counter() - t0)
    assert result is not None
    orders = sum(i.total_orders for i in result.items)
    median_ms = statistics.median(samples) * 1000
    print(
        f"  merchant_statistics(): {orders:,} orders in the period; "
        f"median {median_ms:.1f} ms, max {max(samples) * 1000:.1f} ms over {runs} runs "
        f"{'PASS' if median_ms < 100 else 'FAIL'} (< 100 ms)"
    )
    return median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--merchants", type=int, default=50)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with scratch_database("jivapay_bench_stats") as url:
        use_database(url)
        world = build_world(args.merchants)
        fill(world, args.orders)
        large = world["stores"][0][1]
        small = world["stores"][2][1]
        figures = []
        for label, merchant in (("large", large), ("small", small)):
            for days in (30, 366):
                figures.append((label, days, measure(merchant, label, days, args.runs)))
        print("\nsummary (median of the whole service call):")
        for label, days, ms_ in figures:
            verdict = "PASS" if ms_ < 100 else "FAIL"
            print(f"  {label:<5} merchant, {days:>3} days: {ms_:7.1f} ms  {verdict} (< 100 ms)")


if __name__ == "__main__":
    main()
