"""Teamlead statistics at 1,000,000 orders: the plans and timings of the queries behind
`GET /teamlead/statistics`, `/orders/statistics`, `/traders/{id}/stats`, `/traders` and
`/requisites/online-stats`.

    .venv/bin/python bench/teamlead_statistics.py [--orders 1000000] [--teams 10] [--team-size 20]

Builds a world in a scratch database of its own (teams of traders with requisites, one store),
inserts the order history with `INSERT ... SELECT generate_series(...)` (spread over the last 365
days, a status mix with disputes), VACUUM ANALYZE, then for one teamlead prints the
`EXPLAIN (ANALYZE, BUFFERS)` of the grouped statistics statements over 30 and 366 days (the
partial UTC days at the ends from `order_history`, the rest from the rollup `order_stats_trader`,
which the script rebuilds after the bulk insert) and the p50/max of each service call over
`--repeat` runs, with PASS/FAIL against 100 ms (p50). Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from bench.common import percentiles, scratch_database, use_database

D = Decimal

_HISTORY = """
WITH traders AS (
    SELECT row_number() OVER (ORDER BY r.id) - 1 AS k, r.id AS requisite_id, r.trader_id,
           r.payment_method_id, r.bank_id
    FROM req_traders r
), src AS (
    SELECT g AS i, 'bench_' || g AS pid,
           (100 + (g * 37) % 4900)::numeric(20, 2) AS fiat,
           date_trunc('second', now())
             - make_interval(secs => ((g::bigint * 7919) % (365 * 86400))) AS at,
           CASE WHEN g % 10 = 0 THEN 'canceled' WHEN g % 10 = 1 THEN 'expired'
                WHEN g % 50 = 2 THEN 'disputed' ELSE 'completed' END AS st,
           CASE WHEN g % 2 = 0 THEN 'payin' ELSE 'payout' END AS kind
    FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint) - 1) g
), ins AS (
    INSERT INTO incoming_orders (public_id, store_id, order_type, fiat_currency_id,
        crypto_currency_id, amount_fiat, amount_crypto, exchange_rate, store_commission_rate,
        store_commission, merchant_order_id, status, last_attempt_at, created_at, updated_at)
    SELECT pid, :store, kind, :fiat, :crypto, fiat, fiat / 100, 100, 5,
           round(fiat / 100 * 0.05, 8), pid, 'assigned', at, at, at
    FROM src
    RETURNING id, public_id
)
INSERT INTO order_history (public_id, incoming_order_id, store_id, merchant_id, trader_id,
    requisite_id, payment_method_id, bank_id, fiat_currency_id, crypto_currency_id, order_type,
    amount_fiat, amount_crypto, exchange_rate, store_commission_rate, trader_commission_rate,
    store_commission, trader_commission, platform_profit, hold_amount, turnover_bucket,
    turnover_day, status, expires_at, completed_at, canceled_at, disputed_at, created_at,
    updated_at)
SELECT ins.public_id, ins.id, :store, :merchant, t.trader_id, t.requisite_id,
       t.payment_method_id, t.bank_id, :fiat, :crypto, s.kind, s.fiat, s.fiat / 100, 100, 5, 3,
       round(s.fiat / 100 * 0.05, 8), round(s.fiat / 100 * 0.03, 8),
       round(s.fiat / 100 * 0.05, 8) - round(s.fiat / 100 * 0.03, 8),
       s.fiat / 100 - round(s.fiat / 100 * 0.03, 8),
       date_trunc('minute', s.at), (s.at AT TIME ZONE 'UTC')::date, s.st,
       s.at + interval '15 minutes',
       CASE WHEN s.st = 'completed' THEN s.at + interval '5 minutes' END,
       CASE WHEN s.st IN ('canceled', 'expired') THEN s.at + interval '15 minutes' END,
       CASE WHEN s.st = 'disputed' THEN s.at + interval '20 minutes' END,
       s.at, s.at
FROM ins JOIN src s ON s.pid = ins.public_id
JOIN traders t ON t.k = (s.i / 10) % (SELECT count(*) FROM traders)
"""
# Runs of ten consecutive orders per trader: each trader gets every status and both types (with
# `i % traders` a trader would get one of each), as a live trader does; the number of rollup rows
# a period reads depends on it.


def build_world(teams: int, team_size: int) -> dict[str, int]:
    """Teamleads with their traders (one requisite each, online), one store."""
    from jivapay.database.utils import atomic_transaction
    from jivapay.enums import Role
    from tests.factories import make_reference, make_requisite, make_staff, make_store, make_trader

    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        store = make_store(session, ref, balance=None)
        leads = [make_staff(session, Role.TEAMLEAD) for _ in range(teams)]
        first_trader = 0
        for lead in leads:
            for _ in range(team_size):
                trader = make_trader(session, ref, deposit=D("1000000"), team_lead_id=lead.id)
                first_trader = first_trader or trader.id
                make_requisite(session, trader, ref)
        return {
            "store": store.store.id,
            "merchant": store.merchant.id,
            "fiat": ref.fiat.id,
            "crypto": ref.crypto.id,
            "lead": leads[0].id,
            "lead_user": leads[0].user_id,
            "trader": first_trader,
        }


def fill_history(url: str, world: dict[str, int], orders: int) -> float:
    started = time.monotonic()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        # Generated rows are consistent by construction: skip per-row FK triggers (superuser only).
        with contextlib.suppress(DBAPIError), conn.begin_nested():
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        step = 250_000
        for start in range(0, orders, step):
            conn.execute(
                text(_HISTORY), {**world, "start": start, "stop": min(start + step, orders)}
            )
            print(f"  {min(start + step, orders):>9,} orders", flush=True)
    # The replica role skipped the rollup trigger too: compute the rollup as migration 0009's
    # backfill does, after the commit (had the trigger fired, this recomputes the same rows).
    from jivapay.services import order_stats_rollup

    with engine.begin() as conn:
        order_stats_rollup.rebuild(conn)
        rollup_rows = conn.execute(text("SELECT count(*) FROM order_stats_trader")).scalar_one()
    print(f"  rollup rebuilt: {rollup_rows:,} order_stats_trader rows", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # The visibility map makes the scans index-only, as autovacuum keeps it on a live system.
        for table in (
            "order_history",
            "incoming_orders",
            "order_stats_trader",
            "order_stats_store",
        ):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    engine.dispose()
    return time.monotonic() - started


def capture_statements(call) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    """The SELECT statements (driver SQL and parameters) that `call()` sends to the database."""
    from sqlalchemy import event

    from jivapay.database.engine import get_engine

    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


def explain(session, sql: str, params: dict[str, object]) -> str:  # type: ignore[no-untyped-def]
    rows = session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params).all()
    return "\n".join(f"    {r[0]}" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--team-size", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    with scratch_database("jivapay_bench_team") as url:
        use_database(url)
        from datetime import timedelta

        from sqlalchemy.dialects import postgresql

        from jivapay.database.base import utcnow
        from jivapay.database.engine import get_session_factory
        from jivapay.enums import OnlineStatsSort, Role
        from jivapay.permissions import template_permissions
        from jivapay.security import Principal
        from jivapay.services import online_stats, team_service, team_statistics

        world = build_world(args.teams, args.team_size)
        print(
            f"world: {args.teams} teams x {args.team_size} traders; filling {args.orders:,} orders"
        )
        print(f"history filled in {fill_history(url, world, args.orders):.1f} s")

        principal = Principal(
            world["lead_user"],
            Role.TEAMLEAD,
            "lead@bench",
            world["lead"],
            tuple(template_permissions("teamlead")),
        )
        now = utcnow()
        month = team_statistics.Period(now - timedelta(days=30), now)
        year = team_statistics.Period(now - timedelta(days=366), now)
        session = get_session_factory()()
        team_ids = [t.id for t in team_statistics._team(session, principal)]
        for label, period in (("30 days", month), ("366 days", year)):
            # The partial days at the ends from order_history, the rest from the rollup, in one
            # UNION ALL statement as the service runs it.
            stmt = team_statistics.grouped_statement(session, team_ids, period)
            sql = stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
            print(
                f"\nEXPLAIN (ANALYZE, BUFFERS) team statistics (order_history partial days + "
                f"order_stats_trader), {len(team_ids)} traders, {label}:"
            )
            print(explain(session, str(sql), {}))

        calls = {
            "team_summary (/statistics, 30 days)": lambda: team_statistics.team_summary(
                session, principal=principal, period=month, now=now
            ),
            "team_order_stats (/orders/statistics, 30 days)": lambda: (
                team_statistics.team_order_stats(session, principal=principal, period=month)
            ),
            "team_order_stats (/orders/statistics, 366 days)": lambda: (
                team_statistics.team_order_stats(session, principal=principal, period=year)
            ),
            "trader_stats (/traders/{id}/stats, 366 days)": lambda: team_statistics.trader_stats(
                session, principal=principal, trader_id=world["trader"], period=year
            ),
            "list_traders (/traders)": lambda: team_service.list_traders(
                session,
                principal=principal,
                filters=team_service.TraderFilters(),
                limit=50,
                offset=0,
            ),
            "online_requisites (/requisites/online-stats)": lambda: online_stats.online_requisites(
                session,
                principal=principal,
                filters=online_stats.OnlineFilters(),
                sort=OnlineStatsSort.PRIORITY,
                limit=50,
                offset=0,
                now=now,
            ),
        }
        print("\nevery SELECT each call runs, EXPLAIN (ANALYZE, BUFFERS) (server execution time):")
        for name, call in calls.items():
            print(f"  {name}:")
            for statement, params in capture_statements(call):
                plan = session.connection().exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, params
                )
                lines = [row[0] for row in plan]
                top = lines[0].split("  (")[0].strip()
                scans = sorted(
                    {
                        line.strip().split("  (")[0].removeprefix("->  ")
                        for line in lines
                        if " Scan " in line or line.strip().startswith("->  Index")
                    }
                )
                planning = next(x for x in lines if x.startswith("Planning Time"))
                print(f"    {planning} / {lines[-1].strip():<28} {top}; {'; '.join(scans)[:120]}")
        print(f"\nservice calls, {args.repeat} runs each after one warm-up (target < 100 ms):")
        for name, call in calls.items():
            call()
            samples = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                call()
                samples.append(time.perf_counter() - t0)
            p = percentiles(samples)
            verdict = "PASS" if p["p50"] < 100 else "FAIL"
            print(f"  {name:<52} p50 {p['p50']:7.1f} ms   max {p['max']:7.1f} ms   {verdict}")
        session.close()
        from jivapay.database.engine import dispose_engine

        dispose_engine()


if __name__ == "__main__":
    main()
