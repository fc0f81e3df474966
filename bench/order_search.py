"""The staff order search at 1,000,000 orders: the plan and time of every filter.

    python bench/order_search.py [--orders 1000000] [--repeat 5] [--plans]

On the server of `DATABASE_URL` it creates (and finally drops) `jivapay_search_<random>`, migrates
it, builds 20 merchants with one store each, 50 traders with 4 requisites each, then fills
`incoming_orders` and `order_history` with N orders in one `INSERT ... SELECT generate_series`
(spread over 90 days; statuses, types, customers and amounts varied) with the search indexes of
migration 0004 taken off and built again afterwards, runs ANALYZE, and for each
filter of `GET /orders` runs the very statements the service runs (`staff_queries`: the page of
ids, the capped count, the page's display join) `--repeat` times. It prints, per filter, the
median and worst wall time of the whole search and the server's execution time from
`EXPLAIN (ANALYZE, BUFFERS)` of the page query and of the count; `--plans` prints each plan.
Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import scratch_database, use_database  # noqa: E402

D = Decimal
MERCHANTS = 20
TRADERS = 50
REQUISITES_PER_TRADER = 4
DAYS = 90
SEARCH_INDEXES_PARENT = "0003_selector_indexes"  # the revision before 0004_order_search_indexes

_FILL = """
WITH reqs AS (
    SELECT id, trader_id, payment_method_id, bank_id,
           row_number() OVER (ORDER BY id) - 1 AS k FROM req_traders
), stores AS (
    SELECT id, merchant_id, row_number() OVER (ORDER BY id) - 1 AS k FROM merchant_stores
), src AS (
    SELECT g AS i, 'ord_bench_' || g AS pid,
           (100 + (g * 37) % 49900)::numeric(20, 2) AS fiat,
           date_trunc('second', now()) - make_interval(secs => ((g::bigint * 7919) % (86400 * :days))) AS at,
           CASE WHEN g % 97 = 0 THEN 'disputed' WHEN g % 13 = 0 THEN 'canceled'
                WHEN g % 11 = 0 THEN 'expired' WHEN g % 50 = 0 THEN 'pending'
                ELSE 'completed' END AS st,
           CASE WHEN g % 4 = 0 THEN 'payout' ELSE 'payin' END AS tp,
           'cust_' || (g % 200000) AS customer,
           '10.' || (g % 250) || '.' || (g % 199) || '.' || (g % 251) AS ip
    FROM generate_series(1, CAST(:n AS bigint)) g
), ins AS (
    INSERT INTO incoming_orders (public_id, store_id, order_type, fiat_currency_id,
        crypto_currency_id, amount_fiat, amount_crypto, exchange_rate, store_commission_rate,
        store_commission, merchant_order_id, customer_id, customer_ip, status, last_attempt_at,
        created_at, updated_at)
    SELECT pid, st.id, tp, :fiat, :crypto, fiat, fiat / 100, 100, 5, round(fiat / 100 * 0.05, 8),
           'm_' || i, customer, ip, 'assigned', at, at, at
    FROM src JOIN stores st ON st.k = src.i % :merchants
    RETURNING id, public_id, store_id
)
INSERT INTO order_history (public_id, incoming_order_id, store_id, merchant_id, trader_id,
    requisite_id, payment_method_id, bank_id, fiat_currency_id, crypto_currency_id, order_type,
    amount_fiat, amount_crypto, exchange_rate, store_commission_rate, trader_commission_rate,
    store_commission, trader_commission, platform_profit, hold_amount, turnover_bucket,
    turnover_day, status, customer_id, customer_ip, expires_at, completed_at, canceled_at,
    disputed_at, created_at, updated_at)
SELECT ins.public_id, ins.id, ins.store_id, st.merchant_id, r.trader_id, r.id,
       r.payment_method_id, r.bank_id, :fiat, :crypto, s.tp, s.fiat, s.fiat / 100, 100, 5, 3,
       round(s.fiat / 100 * 0.05, 8), round(s.fiat / 100 * 0.03, 8),
       round(s.fiat / 100 * 0.05, 8) - round(s.fiat / 100 * 0.03, 8),
       s.fiat / 100 - round(s.fiat / 100 * 0.03, 8),
       date_trunc('minute', s.at), (s.at AT TIME ZONE 'UTC')::date, s.st, s.customer, s.ip,
       s.at + interval '15 minutes',
       CASE WHEN s.st = 'completed' THEN s.at + interval '5 minutes' END,
       CASE WHEN s.st IN ('canceled', 'expired') THEN s.at + interval '15 minutes' END,
       CASE WHEN s.st = 'disputed' THEN s.at + interval '10 minutes' END,
       s.at, s.at
FROM ins JOIN src s ON s.pid = ins.public_id
JOIN stores st ON st.id = ins.store_id
JOIN reqs r ON r.k = s.i % (SELECT count(*) FROM reqs)
"""


def build_world() -> dict[str, Any]:
    """Reference data, merchants with a store each, traders with requisites."""
    from jivapay.database.utils import atomic_transaction
    from tests.factories import make_reference, make_requisite, make_store, make_trader

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        stores = [make_store(session, ref, balance=None) for _ in range(MERCHANTS)]
        last4 = []
        for t in range(TRADERS):
            trader = make_trader(session, ref, deposit=None)
            for r in range(REQUISITES_PER_TRADER):
                number = f"2200{t:06d}{t * REQUISITES_PER_TRADER + r:06d}"
                make_requisite(session, trader, ref, number=number)
                last4.append(number[-4:])
        return {
            "fiat": ref.fiat.id,
            "crypto": ref.crypto.id,
            "store": stores[3].store.id,
            "merchant": stores[3].merchant.id,
            "last4": last4[17],
        }


def fill(url: str, n: int, world: dict[str, Any]) -> float:
    from sqlalchemy import create_engine

    from jivapay.database.migrate import downgrade, upgrade

    engine = create_engine(url)
    started = time.perf_counter()
    # Bulk load first, then build the search indexes once (what `CREATE INDEX` on a live table
    # would do), instead of maintaining them row by row during the fill.
    downgrade(SEARCH_INDEXES_PARENT, url=url)
    with engine.begin() as conn:
        # Generated rows reference rows built just above: skip the per-row foreign-key triggers
        # of this bulk load (needs a superuser, as the scratch database's owner usually is).
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text(_FILL),
            {
                "n": n,
                "days": DAYS,
                "fiat": world["fiat"],
                "crypto": world["crypto"],
                "merchants": MERCHANTS,
            },
        )
    filled = time.perf_counter()
    upgrade("head", url=url)
    print(f"search indexes built in {time.perf_counter() - filled:.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE incoming_orders"))
        conn.execute(text("VACUUM ANALYZE order_history"))
        conn.execute(text("VACUUM ANALYZE req_traders"))
    engine.dispose()
    return time.perf_counter() - started


def searches(world: dict[str, Any], n: int) -> dict[str, dict[str, Any]]:
    from jivapay.database.base import utcnow
    from jivapay.enums import OrderSearchSort, OrderStatus, OrderType

    mid = n // 2
    now = utcnow()
    return {
        "no filter (newest first)": {},
        "order_id": {"order_id": f"ord_bench_{mid}"},
        "merchant_order_id": {"merchant_order_id": f"m_{mid}"},
        "customer_id": {"customer_id": "cust_4242"},
        "store_id": {"store_id": world["store"]},
        "merchant_id": {"merchant_id": world["merchant"]},
        "trader_id": {"trader_id": 7},
        "requisite_last4": {"requisite_last4": world["last4"]},
        "amount (exact)": {"amount": D("1234.00")},
        "amount range": {"amount_min": D("20000.00"), "amount_max": D("20010.00")},
        "status=disputed": {"status": OrderStatus.DISPUTED},
        "status=completed": {"status": OrderStatus.COMPLETED},
        "order_type=payout": {"order_type": OrderType.PAYOUT},
        "dates (one day)": {
            "created_from": now - timedelta(days=30),
            "created_to": now - timedelta(days=29),
        },
        "sort=-amount": {"sort": OrderSearchSort.AMOUNT_DESC},
        "sort=amount, status=pending": {
            "sort": OrderSearchSort.AMOUNT_ASC,
            "status": OrderStatus.PENDING,
        },
        "store + status + dates": {
            "store_id": world["store"],
            "status": OrderStatus.COMPLETED,
            "created_from": now - timedelta(days=10),
            "created_to": now,
        },
    }


def explain(session: Any, stmt: Any) -> tuple[float, str]:
    compiled = stmt.compile(
        dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True}
    )
    rows = session.connection().exec_driver_sql(
        "EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), compiled.params
    )
    plan = "\n".join(r[0] for r in rows)
    execution = [line for line in plan.splitlines() if line.startswith("Execution Time")]
    ms = float(execution[0].split(":")[1].strip().split()[0]) if execution else float("nan")
    return ms, plan


def run(n: int, repeat: int, plans: bool) -> None:
    from jivapay.database.engine import get_session_factory
    from jivapay.enums import Role
    from jivapay.security import Principal
    from jivapay.services import staff_queries

    admin = Principal(
        user_id=0, role=Role.ADMIN, email="bench@x", profile_id=0, permissions=("superuser",)
    )
    factory = get_session_factory()
    world = build_world()
    print(f"filling {n:,} orders ...", flush=True)
    print(f"filled in {fill_url_seconds(n, world):.1f} s", flush=True)
    print()
    print(
        f"{'filter':32} {'rows':>6} {'count':>7} {'median ms':>10} {'max ms':>8} {'page plan ms':>13}"
    )
    with factory() as session:
        for name, kwargs in searches(world, n).items():
            search = staff_queries.OrderSearch(**kwargs)
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                items, total, capped = staff_queries.search_orders(
                    session, principal=admin, search=search, limit=50, offset=0
                )
                times.append((time.perf_counter() - started) * 1000)
            page_ms, plan = explain(
                session,
                staff_queries.search_page_statement(session, admin, search, limit=50, offset=0),
            )
            count_ms, count_plan = explain(
                session, staff_queries.search_count_statement(session, admin, search)
            )
            shown = f"{total}{'+' if capped else ''}"
            print(
                f"{name:30} {len(items):>5} {shown:>7} {statistics.median(times):>10.1f} "
                f"{max(times):>8.1f} {page_ms:>13.2f} {count_ms:>14.2f}",
                flush=True,
            )
            if plans:
                print(plan)
                print(f"-- count: {count_ms:.2f} ms")
                print(count_plan)
                print()


_URL: dict[str, str] = {}


def fill_url_seconds(n: int, world: dict[str, Any]) -> float:
    return fill(_URL["url"], n, world)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plans", action="store_true", help="print every EXPLAIN in full")
    args = parser.parse_args()
    with scratch_database("jivapay_search") as url:
        use_database(url)
        _URL["url"] = url
        run(args.orders, args.repeat, args.plans)


if __name__ == "__main__":
    main()
