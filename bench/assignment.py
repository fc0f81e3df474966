"""Assignment throughput and latency of the order engine, against a history of 10k and 1M orders.

    python bench/assignment.py [--orders 3000] [--workers 2] [--history 10000,1000000]
                               [--requisites 1000] [--traders 100] [--pgbench-seconds 10]
                               [--profile] [--scale 1,2,4] [--rollup-off]
                               [--batch 1] [--compare-batch K]

On the server of `DATABASE_URL` it creates (and finally drops) `jivapay_bench_<random>`, migrates
it, builds 1,000 requisites over 100 traders with deposits far above what the run needs, and for
each history size: tops the completed/canceled order history up to that size with one
`INSERT ... SELECT generate_series` (spread over the last 30 days, turnover counters filled for the
recent part, as the engine keeps them), queues N new PayIn orders, and lets W worker processes
("spawn") take ids from a shared cursor and call `process_incoming_order` on each. It prints
assignments per second and per-assignment latency, the `EXPLAIN (ANALYZE, BUFFERS)` of the
selector's candidate query at the largest history, and pgbench's TPC-B TPS on the same server
(`pgbench -i -s 10` into a scratch database, then `-c 4 -j 2 -T 10`) as the reference. The
defaults are the measurement docs/performance.md reports: two workers, one per core of the
development machine.

`--profile` runs worker 0 under cProfile (CPU time, so waits on the database do not count) and
counts its SQL statements and time in the database.
Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import multiprocessing
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import base_url, percentiles, scratch_database, use_database  # noqa: E402

D = Decimal
RATE = D("100")
MINUTES_30_DAYS = 30 * 24 * 60

# --------------------------------------------------------------------------- the world


# Where the store's callbacks would go. Nothing listens and no callback worker runs: what the
# benchmark measures is what an assignment pays for its callback, as with a merchant that has a
# callback URL (the messages are counted and deleted at the end, `drop_redis_keys`).
CALLBACK_URL = "http://127.0.0.1:9/bench-callbacks"


def build_world(
    requisites: int, traders: int, *, callbacks: bool = True, customers: bool = True
) -> dict[str, int]:
    """Reference data, one store (with a callback URL unless `callbacks` is off), traders with
    large deposits, requisites with non-binding limits; unless `customers` is off, block-list
    entries that the orders' customers do not match (`queue_orders` then gives every order a
    customer id and IP, as a merchant's checkout sends them)."""
    from jivapay.database.models import FraudList
    from jivapay.database.utils import atomic_transaction
    from jivapay.enums import FraudListKind, FraudListType
    from tests.factories import make_reference, make_requisite, make_store, make_trader

    with atomic_transaction() as session:
        ref = make_reference(session, rate=RATE)
        store = make_store(
            session,
            ref,
            payin_percent=D("5"),
            upper=D("100000"),
            balance=None,
            callback_url=CALLBACK_URL if callbacks else None,
        )
        people = [
            make_trader(session, ref, payin_percent=D("3"), deposit=D("1000000"), priority=5)
            for _ in range(traders)
        ]
        for i in range(requisites):
            # Every dynamic limit is set (so every check runs) but none binds: assigned orders stay
            # open through every run of one invocation (main, scale, rollup and batch comparisons).
            make_requisite(
                session,
                people[i % traders],
                ref,
                lower=D("100"),
                upper=D("100000"),
                total_limit=D("10000000"),
                window_minutes=60,
                day_max=D("100000000"),
                max_concurrent=1_000_000,
                pay_out=False,
            )
        if customers:
            # What the fraud check's list lookup reads: customer ids, addresses and networks.
            entries = [(FraudListKind.CUSTOMER_ID, f"blocked_{n}") for n in range(20)]
            entries += [(FraudListKind.IP, f"198.51.100.{n}") for n in range(1, 11)]
            entries += [(FraudListKind.IP, f"203.0.113.{16 * n}/28") for n in range(10)]
            session.add_all(
                FraudList(kind=kind.value, value=value, list_type=FraudListType.BLOCK.value)
                for kind, value in entries
            )
        return {
            "store": store.store.id,
            "merchant": store.merchant.id,
            "fiat": ref.fiat.id,
            "crypto": ref.crypto.id,
            "customers": int(customers),
        }


_HISTORY = """
WITH reqs AS (
    SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, trader_id, payment_method_id, bank_id
    FROM req_traders
), src AS (
    SELECT g AS i, 'hist_' || g AS pid,
           (100 + (g * 37) % 4900)::numeric(20, 2) AS fiat,
           date_trunc('second', now()) - make_interval(secs => ((g::bigint * 7919) % 2592000)) AS at,
           CASE WHEN g % 10 = 0 THEN 'canceled' ELSE 'completed' END AS st
    FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint) - 1) g
), ins AS (
    INSERT INTO incoming_orders (public_id, store_id, order_type, fiat_currency_id,
        crypto_currency_id, amount_fiat, amount_crypto, exchange_rate, store_commission_rate,
        store_commission, merchant_order_id, status, last_attempt_at, created_at, updated_at)
    SELECT pid, :store, 'payin', :fiat, :crypto, fiat, fiat / 100, 100, 5,
           round(fiat / 100 * 0.05, 8), pid, 'assigned', at, at, at
    FROM src
    RETURNING id, public_id
)
INSERT INTO order_history (public_id, incoming_order_id, store_id, merchant_id, trader_id,
    requisite_id, payment_method_id, bank_id, fiat_currency_id, crypto_currency_id, order_type,
    amount_fiat, amount_crypto, exchange_rate, store_commission_rate, trader_commission_rate,
    store_commission, trader_commission, platform_profit, hold_amount, turnover_bucket,
    turnover_day, status, expires_at, completed_at, canceled_at, cancellation_reason,
    created_at, updated_at)
SELECT ins.public_id, ins.id, :store, :merchant, r.trader_id, r.id, r.payment_method_id,
       r.bank_id, :fiat, :crypto, 'payin', s.fiat, s.fiat / 100, 100, 5, 3,
       round(s.fiat / 100 * 0.05, 8), round(s.fiat / 100 * 0.03, 8),
       round(s.fiat / 100 * 0.05, 8) - round(s.fiat / 100 * 0.03, 8),
       s.fiat / 100 - round(s.fiat / 100 * 0.03, 8),
       date_trunc('minute', s.at), (s.at AT TIME ZONE 'UTC')::date, s.st,
       s.at + interval '15 minutes',
       CASE WHEN s.st = 'completed' THEN s.at + interval '5 minutes' END,
       CASE WHEN s.st = 'canceled' THEN s.at + interval '15 minutes' END,
       CASE WHEN s.st = 'canceled' THEN 'expired' END,
       s.at, s.at
FROM ins JOIN src s ON s.pid = ins.public_id
JOIN reqs r ON r.k = s.i % (SELECT count(*) FROM reqs)
"""
# Counters of the recent history, as the engine would have kept them: minute buckets for the
# last two days (older ones are pruned), day totals for the last week.
_BUCKETS = """
INSERT INTO requisite_turnover_buckets (requisite_id, bucket_start, amount_fiat)
SELECT requisite_id, turnover_bucket, SUM(amount_fiat) FROM order_history
WHERE id > :after AND status = 'completed' AND turnover_bucket > now() - interval '2 days'
GROUP BY 1, 2
ON CONFLICT (requisite_id, bucket_start)
DO UPDATE SET amount_fiat = requisite_turnover_buckets.amount_fiat + EXCLUDED.amount_fiat
"""
_DAYS = """
INSERT INTO requisite_daily_turnover (requisite_id, day, amount_fiat)
SELECT requisite_id, turnover_day, SUM(amount_fiat) FROM order_history
WHERE id > :after AND status = 'completed' AND turnover_day > CURRENT_DATE - 7
GROUP BY 1, 2
ON CONFLICT (requisite_id, day)
DO UPDATE SET amount_fiat = requisite_daily_turnover.amount_fiat + EXCLUDED.amount_fiat
"""


def grow_history(url: str, world: dict[str, int], have: int, want: int) -> float:
    """Insert history rows `have .. want - 1`; returns the seconds it took (with VACUUM ANALYZE and
    a CHECKPOINT, so that the measured run starts from the steady state, not amid the load's
    writes)."""
    started = time.monotonic()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        # Generated rows are consistent by construction: skip the per-row foreign-key triggers
        # (needs a superuser; without one the insert is just slower).
        with contextlib.suppress(DBAPIError), conn.begin_nested():
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        after = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM order_history")).scalar_one()
        step = 250_000
        for start in range(have, want, step):
            conn.execute(text(_HISTORY), {**world, "start": start, "stop": min(start + step, want)})
        conn.execute(text(_BUCKETS), {"after": after})
        conn.execute(text(_DAYS), {"after": after})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        # Write the load's dirty pages out now: otherwise the checkpoint that the load's WAL
        # triggered spreads that writing over the next minutes, i.e. over the measured run (one
        # run in three at 1M rows had its p99 inflated by 40 % so). Needs a superuser or
        # pg_checkpoint; without one the run just measures with the checkpoint in progress.
        with contextlib.suppress(DBAPIError):
            conn.execute(text("CHECKPOINT"))
    engine.dispose()
    return time.monotonic() - started


# Each order its own customer and an address of its own among 60,000, so that no velocity limit
# (10 orders per customer, 20 per address an hour) refuses any order of a run.
_CUSTOMERS = """
UPDATE incoming_orders
SET customer_id = 'cust_' || id, customer_ip = host(inet '10.0.0.0' + (id % 60000))
WHERE id = ANY(:ids)
"""


def queue_orders(world: dict[str, int], n: int, seed: int) -> list[int]:
    """N new PayIn intake orders of 100-5000 fiat, committed (with a customer id and IP each
    when the world has `customers`)."""
    import random
    from types import SimpleNamespace

    from jivapay.database.models import ExchangeRate, MerchantStore
    from jivapay.database.utils import atomic_transaction
    from tests.factories import make_incoming_batch

    rng = random.Random(seed)
    amounts = [(D(rng.randint(10000, 500000)) / 100).quantize(D("0.01")) for _ in range(n)]
    with atomic_transaction() as session:
        rate = session.query(ExchangeRate).filter_by(fiat_currency_id=world["fiat"]).one()
        # make_incoming_batch reads only these attributes of its store world and reference.
        sw: Any = SimpleNamespace(store=session.get(MerchantStore, world["store"]))
        ref: Any = SimpleNamespace(
            fiat=SimpleNamespace(id=world["fiat"]),
            crypto=SimpleNamespace(id=world["crypto"]),
            rate=rate,
        )
        ids = [o.id for o in make_incoming_batch(session, sw, ref, amounts)]
        if world.get("customers"):
            session.execute(text(_CUSTOMERS), {"ids": ids})
        return ids


# --------------------------------------------------------------------------- workers


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a local PostgreSQL backend has used; None if not readable
    (the server is on another machine, or /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # Fields 14 and 15 of proc(5), counted after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss() -> int:
    """Peak resident memory of this process, in bytes: the kernel's high-water mark (VmHWM), or the
    current RSS (psutil) where /proc is not there. Not `ru_maxrss`: Linux carries that over from
    the parent across fork and exec, so every spawned worker would report the parent's peak."""
    import psutil

    current = int(psutil.Process().memory_info().rss)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return max(current, int(line.split()[1]) * 1024)
    except OSError:
        pass
    return current


def worker(
    ids: list[int], cursor: Any, barrier: Any, results: Any, profile: bool, batch: int
) -> None:
    """Spawn target: take the next id (or `batch` ids, for `process_incoming_batch`) from the
    shared cursor until none is left.

    Reports, besides the latencies: wall time spent in SQL statements (client side: round trip,
    server execution and lock waits), this process's CPU time, its peak resident memory, and the
    CPU time of the PostgreSQL backends it used (when the server is local)."""
    import psutil
    from sqlalchemy import event

    from jivapay.config import reset_settings_cache
    from jivapay.database.engine import dispose_engine, get_engine
    from jivapay.services.order_processor import process_incoming_batch, process_incoming_order
    from jivapay.utils.logging import configure_logging

    reset_settings_cache()
    dispose_engine()
    configure_logging("bench")
    engine = get_engine()
    backends: dict[int, float | None] = {}

    @event.listens_for(engine, "connect")
    def _connected(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = int(cur.fetchone()[0])
        backends[pid] = _backend_cpu(pid)

    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    sql: dict[str, Any] = {"n": 0, "seconds": 0.0, "by_statement": {}}

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, *_: Any) -> None:
        conn.info["t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        spent = time.perf_counter() - conn.info.pop("t0")
        sql["n"] += 1
        sql["seconds"] += spent
        if profile:
            key = " ".join(statement.split())[:90]
            count, total = sql["by_statement"].get(key, (0, 0.0))
            sql["by_statement"][key] = (count + 1, total + spent)

    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    profiler = cProfile.Profile(time.process_time) if profile else None
    barrier.wait()
    sql["n"], sql["seconds"] = 0, 0.0
    backend_start = {pid: _backend_cpu(pid) for pid in backends}
    cpu_start = time.process_time()
    if profiler:
        profiler.enable()
    while True:
        with cursor.get_lock():
            i = cursor.value
            cursor.value += batch
        if i >= len(ids):
            break
        t0 = time.perf_counter()
        if batch == 1:
            done = [process_incoming_order(ids[i]).outcome]
        else:
            done = [r.outcome for r in process_incoming_batch(ids[i : i + batch])]
        # Every order of a batch is assigned when the batch commits: each waited the whole call.
        latencies.extend([time.perf_counter() - t0] * len(done))
        for outcome in done:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finished = time.monotonic()
    cpu = time.process_time() - cpu_start
    if profiler:
        profiler.disable()
    pg_cpu: float | None = 0.0
    for pid, first in backends.items():
        start, end = backend_start.get(pid, first), _backend_cpu(pid)
        if start is None or end is None or pg_cpu is None:
            pg_cpu = None
        else:
            pg_cpu += end - start
    report: dict[str, Any] = {
        "latencies": latencies,
        "outcomes": outcomes,
        "finished": finished,
        "sql_n": sql["n"],
        "sql_seconds": sql["seconds"],
        "cpu": cpu,
        "pg_cpu": pg_cpu,
        "rss": psutil.Process().memory_info().rss,
        "rss_peak": peak_rss(),
    }
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(30)
        report["profile"] = out.getvalue()
        report["sql"] = sql
    results.put(report)


def run_queue(ids: list[int], workers: int, profile: bool, batch: int = 1) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    cursor = ctx.Value("l", 0)
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(ids, cursor, barrier, results, profile and n == 0, batch))
        for n in range(workers)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.monotonic()
    reports = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    wall = max(r["finished"] for r in reports) - started
    latencies = [x for r in reports for x in r["latencies"]]
    outcomes: dict[str, int] = {}
    for r in reports:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    profiled = next((r for r in reports if "profile" in r), None)
    calls = max(len(latencies), 1)
    pg_cpu = [r["pg_cpu"] for r in reports]
    return {
        "workers": workers,
        "wall": wall,
        "outcomes": outcomes,
        "latency": percentiles(latencies),
        "per_second": outcomes.get("assigned", 0) / wall,
        "profiled": profiled,
        # Per process_incoming_order call, in milliseconds, summed over the workers.
        "sql_ms": 1000 * sum(r["sql_seconds"] for r in reports) / calls,
        "statements": sum(r["sql_n"] for r in reports) / calls,
        "cpu_ms": 1000 * sum(r["cpu"] for r in reports) / calls,
        "pg_cpu_ms": None if None in pg_cpu else 1000 * sum(pg_cpu) / calls,
        "rss_peak": [r["rss_peak"] for r in reports],
        "latencies": latencies,
    }


def print_run(result: dict[str, Any]) -> None:
    """One run's figures: throughput and latency, the model's inputs, memory (P4)."""
    lat = result["latency"]
    print(
        f"  {result['workers']} workers: {result['outcomes']} in {result['wall']:.1f} s: "
        f"{result['per_second']:.1f} assignments/s; per assignment "
        f"p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, "
        f"max {lat['max']:.1f} ms"
    )
    pg = "n/a" if result["pg_cpu_ms"] is None else f"{result['pg_cpu_ms']:.2f} ms"
    print(
        f"    per assignment: {result['statements']:.1f} statements, "
        f"d = {result['sql_ms']:.2f} ms waiting on SQL, c = {result['cpu_ms']:.2f} ms worker CPU, "
        f"PostgreSQL backend CPU {pg}"
    )
    peak = max(result["rss_peak"]) / 2**20
    print(
        f"    P4 worker peak RSS: {', '.join(f'{r / 2**20:.0f}' for r in result['rss_peak'])} MB "
        f"(max {peak:.0f} MB, target < 150 MB): {'PASS' if peak < 150 else 'FAIL'}"
    )


def _print_p1_bounds(result: dict[str, Any], tps: float) -> None:
    """What the cores allow (docs/performance.md, "The model"): with the workers and PostgreSQL on
    the same cores, at most `cores / (c + s)` assignments/s, and `cores / s` if the workers cost
    nothing; P1 needs `c + s` at most `cores / (0.5 * TPS)`. Printed only with a local server,
    whose backends' CPU (s) the bench reads."""
    if result["pg_cpu_ms"] is None:
        return
    cores, c, s = os.cpu_count() or 1, result["cpu_ms"], result["pg_cpu_ms"]
    both, database = 1000 * cores / (c + s), 1000 * cores / s
    print(
        f"  bounds on these {cores} cores: {cores} / (c + s) = {cores} / ({c:.2f} + {s:.2f} ms) "
        f"= {both:.0f}/s ({both / tps:.2f} of TPC-B); PostgreSQL alone, {cores} / s = "
        f"{database:.0f}/s ({database / tps:.2f}); P1 needs c + s <= "
        f"{1000 * cores / (0.5 * tps):.2f} ms"
    )


def alternate_p2(
    large: tuple[str, dict[str, int]], small_size: int, rounds: int, args: argparse.Namespace
) -> dict[str, dict[str, list[float]]]:
    """P2 side by side: a second database with `small_size` history rows next to the large one,
    and `rounds` runs of the queue on each, alternating (small, large), (large, small), ... so that
    a slow spell of the machine falls on both sizes alike instead of on whichever ran last.
    Returns each size's latencies (seconds) and per-round worker CPU (ms per assignment)."""
    figures: dict[str, dict[str, list[float]]] = {
        name: {"latencies": [], "cpu_ms": []} for name in ("small", "large")
    }
    with scratch_database("jivapay_bench_small") as small_url:
        use_database(small_url)
        small_world = build_world(
            args.requisites,
            args.traders,
            callbacks=not args.no_callbacks,
            customers=not args.no_customers,
        )
        grow_history(small_url, small_world, 0, small_size)
        places = {"small": (small_url, small_world), "large": large}
        for n in range(rounds):
            for name in ("small", "large") if n % 2 == 0 else ("large", "small"):
                url, world = places[name]
                use_database(url)
                ids = queue_orders(world, args.orders, seed=1_000_000 + 2 * n + (name == "large"))
                result = run_queue(ids, args.workers, False, args.batch)
                figures[name]["latencies"] += result["latencies"]
                figures[name]["cpu_ms"].append(result["cpu_ms"])
                print(
                    f"  round {n + 1} {name:>5}: {result['per_second']:7.1f} assignments/s, "
                    f"p50 {result['latency']['p50']:5.1f} ms, p99 {result['latency']['p99']:5.1f} "
                    f"ms, c {result['cpu_ms']:.2f} ms"
                )
        drop_redis_keys(small_url)
    use_database(large[0])
    return figures


# --------------------------------------------------------------------------- explain, pgbench


def explain_selector(world: dict[str, int]) -> str:
    """The selector's plan as the workers run it: a prepared statement under `generic_plans_column`
    (planned once, for any values), then the same query planned for these values, whose planning
    time is what every execution paid before."""
    import psycopg

    from jivapay.database.utils import read_session
    from jivapay.enums import OrderType
    from jivapay.services.requisite_selector import _STATEMENTS

    stmt = _STATEMENTS[OrderType.PAYIN]
    params: dict[str, Any] = {
        "fiat_currency_id": world["fiat"],
        "crypto_currency_id": world["crypto"],
        "payment_method_id": None,
        "bank_id": None,
        "amount_fiat": D("2500.00"),
        "amount_crypto": D("25.00000000"),
        "excluded": [],
    }
    positions: dict[str, int] = {}

    def numbered(match: re.Match[str]) -> str:
        return f"${positions.setdefault(match.group(1), len(positions) + 1)}"

    with read_session() as session:  # rolled back on close: the FOR UPDATE lock goes with it
        compiled = stmt.compile(dialect=session.get_bind().dialect)
        prepared = re.sub(r"%\((\w+)\)s", numbered, str(compiled))
        values = compiled.construct_params(params)
        raw = session.connection().connection.driver_connection
        with psycopg.ClientCursor(raw) as cur:
            cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            cur.execute(f"PREPARE bench_selector AS {prepared}")
            args = ", ".join(cur.mogrify("%s", [values[name]]) for name in positions)
            cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_selector({args})")
            generic = "\n".join(r[0] for r in cur.fetchall())
        rows = session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + stmt.text), params)
        custom = [r[0] for r in rows]
        planning = [line.strip() for line in custom if line.startswith("Planning Time")]
        return (
            "generic plan (prepared, planned once; what the workers run):\n"
            + generic
            + "\n\nthe same query planned for these values (every execution before "
            + "generic_plans_column): "
            + ", ".join(planning)
        )


def pgbench_binary() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    return str(candidates[-1]) if candidates else None


def pgbench_tps(seconds: int, clients: int = 4, threads: int = 2) -> tuple[float, str] | None:
    """TPC-B TPS of this server: `pgbench -i -s 10` into a scratch database, then a timed run."""
    binary = pgbench_binary()
    if binary is None:
        print("pgbench not found: no reference TPS")
        return None
    base = make_url(base_url())
    name = f"jivapay_pgbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        base.set(drivername="postgresql+psycopg", database="postgres"),
        isolation_level="AUTOCOMMIT",
    )
    env = {**os.environ, "PGPASSWORD": base.password or ""}
    conn_args = [
        "-h",
        base.host or "127.0.0.1",
        "-p",
        str(base.port or 5432),
        "-U",
        base.username or "postgres",
    ]
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        subprocess.run(
            [binary, "-i", "-s", "10", "-q", *conn_args, name],
            env=env,
            check=True,
            capture_output=True,
        )
        run = subprocess.run(
            [binary, "-c", str(clients), "-j", str(threads), "-T", str(seconds), *conn_args, name],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    match = re.search(r"tps = ([0-9.]+)", run.stdout)
    if not match:
        print(run.stdout)
        return None
    return float(match.group(1)), run.stdout.strip().splitlines()[-1]


def set_rollup_trigger(url: str, state: str) -> None:
    """ENABLE or DISABLE the statistics rollup trigger of `order_history` (migration 0009)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE order_history {state} TRIGGER order_stats_rollup"))
    engine.dispose()


def bench_queue() -> str:
    """The Celery queue of this run's messages (the assignments' callbacks), deleted at the end."""
    return os.environ.setdefault("CELERY_TASK_QUEUE", f"jivapay-bench-{os.getpid()}")


def drop_redis_keys(url: str) -> None:
    """Delete this run's keys (fraud counters) from Redis, `jivapay:<database name>:*`, and its
    queue of callback messages (printing how many there were)."""
    import redis

    name = make_url(url).database
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        queue = bench_queue()
        messages = client.llen(queue)
        if messages:
            print(f"callback messages published: {messages}")
        client.delete(queue, f"_kombu.binding.{queue}")
        keys = list(client.scan_iter(match=f"jivapay:{name}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--history", default="10000,1000000")
    parser.add_argument("--requisites", type=int, default=1000)
    parser.add_argument("--traders", type=int, default=100)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile worker 0, count its SQL")
    parser.add_argument(
        "--scale",
        default="",
        help="comma-separated worker counts (e.g. 1,2,4): the same queue again at the largest "
        "history with each count (P5)",
    )
    parser.add_argument(
        "--rollup-off",
        action="store_true",
        help="at the largest history, also run the queue with the order_stats_rollup trigger "
        "disabled, right after one with it on, to show what the trigger costs",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="orders per transaction: 1 calls process_incoming_order, more process_incoming_batch",
    )
    parser.add_argument(
        "--compare-batch",
        type=int,
        default=0,
        help="at the largest history, also run the queue one order per transaction and then K "
        "per transaction, side by side",
    )
    parser.add_argument(
        "--no-callbacks",
        action="store_true",
        help="a store without a callback URL (no callback message per assignment), as the "
        "benchmark's world was before 2026-12-07",
    )
    parser.add_argument(
        "--no-customers",
        action="store_true",
        help="orders without a customer id and IP and no block-list entries (no list lookup, one "
        "velocity counter per order), as the benchmark's world was before 2026-12-07",
    )
    parser.add_argument(
        "--p2-rounds",
        type=int,
        default=0,
        help="also measure P2 side by side: a second database at the smallest history, and R "
        "alternating runs of the queue on each size",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.history.split(",") if s]
    scale = [int(s) for s in args.scale.split(",") if s]
    # The fraud checks count velocity in Redis (keys namespaced by the scratch database's name).
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("LOG_JSON", "false")
    bench_queue()

    print(f"server: {make_url(base_url()).render_as_string(hide_password=True)}")
    print(f"cores: {os.cpu_count()}, workers: {args.workers}, orders per run: {args.orders}")
    reference = pgbench_tps(args.pgbench_seconds) if args.pgbench_seconds > 0 else None
    if reference:
        print(f"pgbench TPC-B -s 10 -c 4 -j 2 -T {args.pgbench_seconds}: {reference[1]}")

    with scratch_database("jivapay_bench") as url:
        use_database(url)
        t0 = time.monotonic()
        world = build_world(
            args.requisites,
            args.traders,
            callbacks=not args.no_callbacks,
            customers=not args.no_customers,
        )
        print(
            f"world: {args.requisites} requisites over {args.traders} traders "
            f"in {time.monotonic() - t0:.1f} s"
        )
        have = 0
        figures: dict[int, dict[str, Any]] = {}
        for size in sizes:
            seconds = grow_history(url, world, have, size)
            have = size
            print(f"\nhistory: {size:,} orders (inserted in {seconds:.1f} s)")
            ids = queue_orders(world, args.orders, seed=size)
            result = run_queue(ids, args.workers, args.profile, args.batch)
            figures[size] = result
            print_run(result)
            profiled = result["profiled"]
            if profiled:
                n = sum(profiled["outcomes"].values())
                sql = profiled["sql"]
                print(
                    f"  worker 0: {n} calls, {sql['n'] / max(n, 1):.1f} SQL statements and "
                    f"{sql['seconds'] * 1000 / max(n, 1):.2f} ms in the database per call, "
                    f"{sum(profiled['latencies']) * 1000 / max(n, 1):.2f} ms per call in all"
                )
                ranked = sorted(sql["by_statement"].items(), key=lambda kv: -kv[1][1])
                for statement, (count, total) in ranked[:14]:
                    print(
                        f"    {total * 1000 / max(n, 1):6.2f} ms/call  x{count / max(n, 1):4.1f}  {statement}"
                    )
                print(profiled["profile"])
        scaled: list[dict[str, Any]] = []
        if scale:
            print(f"\nscale-out at {have:,} orders of history, {args.orders} orders per run (P5):")
        for n, workers in enumerate(scale):
            ids = queue_orders(world, args.orders, seed=have + 1 + n)
            scaled.append(run_queue(ids, workers, False, args.batch))
            print_run(scaled[-1])
        rollup: dict[str, dict[str, Any]] = {}
        if args.rollup_off:
            print(f"\norder_stats_rollup trigger at {have:,} orders of history, on then off:")
            for state in ("ENABLE", "DISABLE"):
                set_rollup_trigger(url, state)
                ids = queue_orders(world, args.orders, seed=have + 100 + len(rollup))
                rollup[state] = run_queue(ids, args.workers, False, args.batch)
                print(f"  trigger {state.lower()}d:")
                print_run(rollup[state])
            set_rollup_trigger(url, "ENABLE")
        batches: dict[int, dict[str, Any]] = {}
        if args.compare_batch:
            print(f"\nbatches at {have:,} orders of history, {args.workers} workers:")
            for k in (1, args.compare_batch):
                ids = queue_orders(world, args.orders, seed=have + 200 + k)
                batches[k] = run_queue(ids, args.workers, False, k)
                print(f"  {k} order(s) per transaction:")
                print_run(batches[k])
        alternating: dict[str, dict[str, list[float]]] = {}
        if args.p2_rounds and len(sizes) >= 2:
            print(
                f"\nP2 side by side: {sizes[0]:,} and {have:,} orders of history, "
                f"{args.p2_rounds} alternating rounds of {args.orders} orders each:"
            )
            alternating = alternate_p2((url, world), sizes[0], args.p2_rounds, args)
        print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the selector at {have:,} orders of history:")
        print(explain_selector(world))
        drop_redis_keys(url)

    print("\nsummary")
    for size, result in figures.items():
        print(
            f"  history {size:>9,}: {result['per_second']:8.1f} assignments/s, "
            f"p50 {result['latency']['p50']:6.1f} ms, p99 {result['latency']['p99']:6.1f} ms"
        )
    if reference and figures:
        best = figures[sizes[-1]]["per_second"]
        print(
            f"  assignments/s at {sizes[-1]:,} / pgbench TPS = {best:.1f} / {reference[0]:.1f} "
            f"= {best / reference[0]:.2f} (target >= 0.5)"
        )
        _print_p1_bounds(figures[sizes[-1]], reference[0])
    runs = [*figures.values(), *scaled, *rollup.values(), *batches.values()]
    if runs:
        peak = max(max(r["rss_peak"]) for r in runs) / 2**20
        print(
            f"  P4 worker peak RSS over every run = {peak:.0f} MB (target < 150 MB): "
            f"{'PASS' if peak < 150 else 'FAIL'}"
        )
    if scaled:
        base = scaled[0]
        print("  P5 scale-out (same queue size, largest history):")
        for r in scaled:
            print(
                f"    {r['workers']} workers: {r['per_second']:7.1f} assignments/s "
                f"(x{r['per_second'] / base['per_second']:.2f} of {base['workers']}), "
                f"d {r['sql_ms']:.2f} ms, c {r['cpu_ms']:.2f} ms, p99 {r['latency']['p99']:.1f} ms"
            )
    if rollup:
        on, off = rollup["ENABLE"], rollup["DISABLE"]
        print(
            f"  rollup trigger: on {on['per_second']:.1f} / off {off['per_second']:.1f} "
            f"assignments/s; d on {on['sql_ms']:.2f} / off {off['sql_ms']:.2f} ms per assignment"
        )
    if batches:
        one, many = batches[1], batches[args.compare_batch]
        print(
            f"  batch of {args.compare_batch} / one per transaction: "
            f"{many['per_second']:.1f} / {one['per_second']:.1f} assignments/s "
            f"= x{many['per_second'] / one['per_second']:.2f}; d {many['sql_ms']:.2f} / "
            f"{one['sql_ms']:.2f} ms, c {many['cpu_ms']:.2f} / {one['cpu_ms']:.2f} ms per assignment"
        )
        if reference:
            # The same target, with the workers assigning in batches (`ASSIGNMENT_BATCH_SIZE`).
            print(
                f"  in batches of {args.compare_batch}: assignments/s at {sizes[-1]:,} / pgbench "
                f"TPS = {many['per_second']:.1f} / {reference[0]:.1f} = "
                f"{many['per_second'] / reference[0]:.2f} (target >= 0.5); not assigned: "
                f"{sum(n for k, n in many['outcomes'].items() if k != 'assigned')}"
            )
            _print_p1_bounds(many, reference[0])
    if alternating:
        p99 = {k: percentiles(v["latencies"])["p99"] for k, v in alternating.items()}
        cpu = {k: sum(v["cpu_ms"]) / len(v["cpu_ms"]) for k, v in alternating.items()}
        ratio = p99["large"] / p99["small"]
        print(
            f"  P2 side by side ({args.p2_rounds} alternating rounds): p99({sizes[-1]:,}) / "
            f"p99({sizes[0]:,}) = {p99['large']:.1f} / {p99['small']:.1f} = {ratio:.2f} "
            f"(target <= 1.2): {'PASS' if ratio <= 1.2 else 'FAIL'}; worker CPU c "
            f"{cpu['large']:.2f} / {cpu['small']:.2f} ms"
        )
    if len(sizes) >= 2:
        small, large = figures[sizes[0]], figures[sizes[-1]]
        ratio = large["latency"]["p99"] / small["latency"]["p99"]
        print(
            f"  p99({sizes[-1]:,}) / p99({sizes[0]:,}) = {large['latency']['p99']:.1f} / "
            f"{small['latency']['p99']:.1f} = {ratio:.2f} (target <= 1.2)"
        )


if __name__ == "__main__":
    main()
