"""Shared machinery of the concurrency and crash tests.

- `build_world`: one store, 20 requisites over 10 traders with tight limits (open-order caps,
  rolling-window totals, day totals, deposits that run out) plus a round-robin group, and N intake
  orders, all committed so other processes see them.
- Worker bodies for `multiprocessing` "spawn" children: `assign_worker` (process every id in its own
  shuffled order), `assign_batch_worker` (the same, several ids per transaction) and `transition_worker` (confirm/cancel lists of orders). Each child builds its own
  engine from the inherited `DATABASE_URL`.
- `invariant_violations`: every limit and counter recomputed from `order_history` with plain SQL,
  independently of the counters the engine keeps.
- `Workers`: real Celery prefork worker processes that the crash and chaos tests `kill -9` (one
  pool child, or the whole worker) and start again.
- A Celery app for the crash test (`celery -A tests.concurrency.workload:celery_app`): the project's
  app and tasks, with every broker key namespaced by `JIVAPAY_TEST_BROKER_PREFIX`, so a test that
  kills workers leaves nothing behind in a shared Redis (unacked messages included).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from jivapay.worker.app import celery_app
from tests.factories import (
    make_incoming_batch,
    make_reference,
    make_requisite,
    make_store,
    make_trader,
)

D = Decimal
TIGHT_LOWER, TIGHT_UPPER = Decimal("100"), Decimal("1000")
BROKER_PREFIX_ENV = "JIVAPAY_TEST_BROKER_PREFIX"
PROCESS_TASK = "orders.process"

# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class ReqSpec:
    """One requisite of the test world: its trader (index), limits and accepted amounts."""

    trader: int
    lower: Decimal = TIGHT_LOWER
    upper: Decimal = TIGHT_UPPER
    max_concurrent: int | None = None
    total_limit: Decimal | None = None
    window_minutes: int | None = None
    day_max: Decimal | None = None


@dataclass(frozen=True)
class TraderSpec:
    priority: int
    deposit: Decimal  # crypto; rate is 100, so 1 crypto covers about 100 fiat of PayIn


# Traders 0-7 share the "tight" band (100-1000 fiat); 8-9 are the round-robin group, the only ones
# accepting the "small" band (10-99.99), with deposits far above what that band needs.
TRADERS: tuple[TraderSpec, ...] = (
    TraderSpec(1, D("2000")),
    TraderSpec(1, D("2000")),
    TraderSpec(2, D("2000")),
    TraderSpec(2, D("2000")),
    TraderSpec(3, D("300")),  # deposit binds before the day limit
    TraderSpec(3, D("300")),
    TraderSpec(4, D("1000")),  # deposit binds (has an unlimited requisite)
    TraderSpec(4, D("1500")),
    TraderSpec(5, D("10000")),
    TraderSpec(5, D("10000")),
)
REQUISITES: tuple[ReqSpec, ...] = (
    ReqSpec(0, max_concurrent=1),
    ReqSpec(1, max_concurrent=2),
    ReqSpec(2, max_concurrent=3),
    ReqSpec(3, max_concurrent=1),
    ReqSpec(4, max_concurrent=2),
    ReqSpec(5, max_concurrent=3),
    ReqSpec(6, total_limit=D("40000"), window_minutes=60),
    ReqSpec(7, total_limit=D("50000"), window_minutes=60),
    ReqSpec(0, total_limit=D("60000"), window_minutes=30),
    ReqSpec(1, total_limit=D("70000"), window_minutes=120),
    ReqSpec(2, day_max=D("40000")),
    ReqSpec(3, day_max=D("50000")),
    ReqSpec(4, day_max=D("60000")),
    ReqSpec(5, day_max=D("70000")),
    ReqSpec(6),  # only the deposit limits these two
    ReqSpec(7),
    ReqSpec(8, lower=D("10"), upper=D("99.99")),
    ReqSpec(8, lower=D("10"), upper=D("99.99")),
    ReqSpec(9, lower=D("10"), upper=D("99.99")),
    ReqSpec(9, lower=D("10"), upper=D("99.99")),
)
ROUND_ROBIN = tuple(i for i, r in enumerate(REQUISITES) if r.lower < 100)


@dataclass(frozen=True)
class World:
    store_id: int
    crypto_currency_id: int
    trader_ids: list[int]
    requisite_ids: list[int]
    round_robin_ids: list[int]
    incoming_ids: list[int]
    deposits: dict[int, Decimal] = field(default_factory=dict)  # trader id -> initial deposit


def _amount(rng: random.Random, low_cents: int, high_cents: int) -> Decimal:
    return (D(rng.randint(low_cents, high_cents)) / 100).quantize(D("0.01"))


def build_world(
    factory: sessionmaker[Session],
    *,
    small_orders: int,
    tight_orders: int,
    seed: int,
    deposit_scale: Decimal = Decimal(1),
) -> World:
    """Commit the store, traders, requisites and intake orders (in a shuffled mix of the bands)."""
    rng = random.Random(seed)
    with factory() as session, session.begin():
        ref = make_reference(session, rate=D("100"))
        store = make_store(
            session, ref, payin_percent=D("5"), lower=D("10"), upper=D("100000"), balance=None
        )
        traders = [
            make_trader(
                session,
                ref,
                payin_percent=D("3"),
                deposit=t.deposit * deposit_scale,
                priority=t.priority,
            )
            for t in TRADERS
        ]
        reqs = [
            make_requisite(
                session,
                traders[r.trader],
                ref,
                lower=r.lower,
                upper=r.upper,
                total_limit=r.total_limit,
                window_minutes=r.window_minutes,
                day_max=r.day_max,
                max_concurrent=r.max_concurrent,
                pay_out=False,
            )
            for r in REQUISITES
        ]
        amounts = [_amount(rng, 1000, 9999) for _ in range(small_orders)]
        amounts += [_amount(rng, 10000, 100000) for _ in range(tight_orders)]
        rng.shuffle(amounts)
        incoming = [o.id for o in make_incoming_batch(session, store, ref, amounts)]
        return World(
            store_id=store.store.id,
            crypto_currency_id=ref.crypto.id,
            trader_ids=[t.id for t in traders],
            requisite_ids=[r.id for r in reqs],
            round_robin_ids=[reqs[i].id for i in ROUND_ROBIN],
            incoming_ids=incoming,
            deposits={
                t.id: spec.deposit * deposit_scale for t, spec in zip(traders, TRADERS, strict=True)
            },
        )


# --------------------------------------------------------------------------- worker processes


def _child_setup() -> None:
    """A spawned child: quiet logs, a fresh engine from the inherited DATABASE_URL."""
    from jivapay.config import reset_settings_cache
    from jivapay.database.engine import dispose_engine
    from jivapay.utils.logging import configure_logging

    reset_settings_cache()
    dispose_engine()
    configure_logging("test-worker")


def _warm_up() -> None:
    from jivapay.database.engine import get_engine

    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def assign_worker(ids: list[int], seed: int, barrier: Any, results: Any) -> None:
    """Spawn target: process every id (in this worker's own shuffled order); report outcomes."""
    _child_setup()
    from jivapay.services.order_processor import process_incoming_order

    order = list(ids)
    random.Random(seed).shuffle(order)
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    _warm_up()
    barrier.wait()
    started = time.perf_counter()
    for incoming_id in order:
        try:
            outcomes[process_incoming_order(incoming_id).outcome] += 1
        except Exception:
            errors.append(traceback.format_exc(limit=5))
    results.put(
        {
            "seed": seed,
            "outcomes": dict(outcomes),
            "errors": errors,
            "seconds": time.perf_counter() - started,
        }
    )


def assign_batch_worker(ids: list[int], seed: int, size: int, barrier: Any, results: Any) -> None:
    """Spawn target: like `assign_worker`, `size` ids at a time through `process_incoming_batch`."""
    _child_setup()
    from jivapay.services.order_processor import process_incoming_batch

    order = list(ids)
    random.Random(seed).shuffle(order)
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    _warm_up()
    barrier.wait()
    for start in range(0, len(order), size):
        try:
            for result in process_incoming_batch(order[start : start + size]):
                outcomes[result.outcome] += 1
        except Exception:
            errors.append(traceback.format_exc(limit=5))
    results.put({"seed": seed, "outcomes": dict(outcomes), "errors": errors})


# (public_id, "confirm" | "cancel", trader_id)
Op = tuple[str, str, int]


def transition_worker(ops: list[Op], barrier: Any, results: Any) -> None:
    """Spawn target: confirm or cancel each order as its trader; report (public_id, op, result)."""
    _child_setup()
    from jivapay.database.utils import atomic_transaction
    from jivapay.services import order_status_manager as osm
    from jivapay.utils.exceptions import InvalidStatusTransition

    done: list[tuple[str, str, str]] = []
    errors: list[str] = []
    _warm_up()
    barrier.wait()
    for public_id, op, trader_id in ops:
        actor = osm.Actor(osm.ActorKind.TRADER, trader_id=trader_id)
        try:
            with atomic_transaction() as session:
                if op == "confirm":
                    res = osm.transition(
                        session, event=osm.OrderEvent.CONFIRM, public_id=public_id, actor=actor
                    )
                else:
                    res = osm.cancel_order(session, public_id=public_id, actor=actor, reason="t")
            done.append((public_id, op, "changed" if res.changed else "unchanged"))
        except InvalidStatusTransition:
            done.append((public_id, op, "invalid"))
        except Exception:
            errors.append(traceback.format_exc(limit=5))
    results.put({"done": done, "errors": errors})


def run_processes(target: Any, arg_lists: list[tuple[Any, ...]], timeout: float) -> list[Any]:
    """Start one spawn child per argument tuple, release them together, collect their reports."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(arg_lists))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in arg_lists]
    for p in procs:
        p.start()
    try:
        reports = [results.get(timeout=timeout) for _ in procs]
        for p in procs:
            p.join(30)
        return reports
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)


# --------------------------------------------------------------------------- independent checks

_OPEN = "('pending', 'paid', 'disputed')"
_LIVE = "status NOT IN ('canceled', 'expired')"

_CHECKS: dict[str, str] = {
    "incoming order assigned twice": """
        SELECT incoming_order_id, COUNT(*) FROM order_history
        GROUP BY incoming_order_id HAVING COUNT(*) > 1""",
    "assigned without order / order without assigned intake": """
        SELECT i.id, i.status FROM incoming_orders i
        LEFT JOIN order_history o ON o.incoming_order_id = i.id
        WHERE (i.status = 'assigned') <> (o.id IS NOT NULL)""",
    "open orders above max_concurrent_orders": f"""
        SELECT r.id, s.max_concurrent_orders, COUNT(o.id) FROM req_traders r
        JOIN full_requisites_settings s ON s.requisite_id = r.id
        JOIN order_history o ON o.requisite_id = r.id AND o.status IN {_OPEN}
        WHERE s.max_concurrent_orders IS NOT NULL
        GROUP BY r.id, s.max_concurrent_orders HAVING COUNT(o.id) > s.max_concurrent_orders""",
    "req_traders.open_orders differs from the open orders": f"""
        SELECT r.id, r.open_orders, COUNT(o.id) FROM req_traders r
        LEFT JOIN order_history o ON o.requisite_id = r.id AND o.status IN {_OPEN}
        GROUP BY r.id, r.open_orders HAVING r.open_orders <> COUNT(o.id)""",
    # Every assignment saw the live orders of its window (bucket - window, bucket]; checking that
    # set for every bucket an order landed in covers the moment of each assignment.
    "rolling-window turnover above total_limit": f"""
        WITH slots AS (SELECT DISTINCT requisite_id, turnover_bucket FROM order_history WHERE {_LIVE})
        SELECT s.requisite_id, s.turnover_bucket, f.total_limit, SUM(o.amount_fiat)
        FROM slots s
        JOIN full_requisites_settings f ON f.requisite_id = s.requisite_id
            AND f.total_limit IS NOT NULL AND f.turnover_limit_minutes IS NOT NULL
        JOIN order_history o ON o.requisite_id = s.requisite_id AND o.{_LIVE}
            AND o.turnover_bucket <= s.turnover_bucket
            AND o.turnover_bucket > s.turnover_bucket - make_interval(mins => f.turnover_limit_minutes)
        GROUP BY s.requisite_id, s.turnover_bucket, f.total_limit
        HAVING SUM(o.amount_fiat) > f.total_limit""",
    "day turnover above turnover_day_max": f"""
        SELECT o.requisite_id, o.turnover_day, f.turnover_day_max, SUM(o.amount_fiat)
        FROM order_history o JOIN full_requisites_settings f ON f.requisite_id = o.requisite_id
        WHERE f.turnover_day_max IS NOT NULL AND o.{_LIVE}
        GROUP BY o.requisite_id, o.turnover_day, f.turnover_day_max
        HAVING SUM(o.amount_fiat) > f.turnover_day_max""",
    "turnover bucket counter differs from live orders": f"""
        WITH live AS (SELECT requisite_id, turnover_bucket AS k, SUM(amount_fiat) AS amount
                      FROM order_history WHERE {_LIVE} GROUP BY 1, 2)
        SELECT COALESCE(b.requisite_id, l.requisite_id), COALESCE(b.bucket_start, l.k),
               b.amount_fiat, l.amount
        FROM requisite_turnover_buckets b
        FULL JOIN live l ON l.requisite_id = b.requisite_id AND l.k = b.bucket_start
        WHERE COALESCE(b.amount_fiat, 0) <> COALESCE(l.amount, 0)""",
    "day turnover counter differs from live orders": f"""
        WITH live AS (SELECT requisite_id, turnover_day AS k, SUM(amount_fiat) AS amount
                      FROM order_history WHERE {_LIVE} GROUP BY 1, 2)
        SELECT COALESCE(d.requisite_id, l.requisite_id), COALESCE(d.day, l.k), d.amount_fiat, l.amount
        FROM requisite_daily_turnover d
        FULL JOIN live l ON l.requisite_id = d.requisite_id AND l.k = d.day
        WHERE COALESCE(d.amount_fiat, 0) <> COALESCE(l.amount, 0)""",
    "trader hold out of range or not the sum of open PayIn holds": f"""
        SELECT b.trader_id, b.balance, b.frozen, COALESCE(SUM(o.hold_amount), 0)
        FROM balance_traders b
        LEFT JOIN order_history o ON o.trader_id = b.trader_id
            AND o.crypto_currency_id = b.crypto_currency_id
            AND o.order_type = 'payin' AND o.status IN {_OPEN}
        GROUP BY b.trader_id, b.balance, b.frozen
        HAVING b.frozen < 0 OR b.frozen > b.balance OR b.frozen <> COALESCE(SUM(o.hold_amount), 0)""",
}


def invariant_violations(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Every violated engine invariant, recomputed from order_history (empty when all hold)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for name, sql in _CHECKS.items():
        rows = [tuple(r) for r in session.execute(text(sql))]
        if rows:
            found[name] = rows
    return found


def intake_status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(text("SELECT status, COUNT(*) FROM incoming_orders GROUP BY status"))
    return {status: int(n) for status, n in rows}


def set_settings(factory: sessionmaker[Session], **values: object) -> None:
    """Store run-time settings in a committed transaction (other processes read them)."""
    from jivapay.utils.config_loader import invalidate_cache, set_config_value

    with factory() as session, session.begin():
        for key, value in values.items():
            set_config_value(session, key, value)
    invalidate_cache()


# --------------------------------------------------------------------------- killable Celery workers

ROOT = Path(__file__).resolve().parents[2]
POOL_SETTLE = 1.0  # seconds a pool process lives before a test may kill it


class Workers:
    """Celery worker processes of a test, each in its own process group (kill -9 = killpg).

    `app` is the Celery application to run (`-A`), `queues` the comma-separated queues it consumes.
    """

    def __init__(
        self,
        env: dict[str, str],
        queues: str,
        logs: Path,
        *,
        hostname: str,
        app: str = "tests.concurrency.workload:celery_app",
        concurrency: int = 2,
    ) -> None:
        self.env, self.queues, self.logs = env, queues, logs
        self.hostname, self.app, self.concurrency = hostname, app, concurrency
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.restarts = 0  # masters that died of a child's death and were started again

    def start(self, slot: int) -> None:
        self.started += 1
        log = open(self.logs / f"worker-{slot}-{self.started}.log", "wb")  # noqa: SIM115
        self.procs[slot] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "--pool",
                "prefork",
                "-c",
                str(self.concurrency),
                "-Q",
                self.queues,
                "--hostname",
                f"{self.hostname}-{slot}-{self.started}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def pool(self, slot: int) -> list[psutil.Process]:
        """Pool processes of worker `slot` that have been up long enough to finish their start-up
        handshake (Celery's master gives up, "Could not start worker processes", if one dies
        before it)."""
        try:
            children = psutil.Process(self.procs[slot].pid).children()
        except psutil.NoSuchProcess:
            return []
        now = time.time()
        return [c for c in children if now - c.create_time() > POOL_SETTLE]

    def wait_for_pool(self, slot: int, timeout: float = 60.0) -> None:
        """Block until worker `slot` has a settled pool, restarting it if its master has died: a
        loaded machine takes seconds to start Celery, and killing a worker that never got to work
        proves nothing."""
        deadline = time.monotonic() + timeout
        while not self.pool(slot):
            if self.procs[slot].poll() is not None:
                self.restarts += 1
                self.start(slot)
            assert time.monotonic() < deadline, f"worker {slot} started no pool\n{self.log_tail()}"
            time.sleep(0.1)

    def revive(self) -> None:
        """Start again every worker whose master has died by itself (Celery's master gives up when
        a pool process dies during its start-up handshake, which a loaded machine makes likelier),
        as a deployment's supervisor would."""
        for slot, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.restarts += 1
                self.start(slot)

    def kill_child(self, slot: int) -> None:
        """SIGKILL one pool process of worker `slot` (its master forks a new one)."""
        self.wait_for_pool(slot)
        random.choice(self.pool(slot)).send_signal(signal.SIGKILL)

    def kill_worker(self, slot: int) -> None:
        """SIGKILL the whole worker (master and pool) at once."""
        proc = self.procs.pop(slot)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for slot in list(self.procs):
            self.kill_worker(slot)

    close = stop_all

    def log_tail(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.logs.glob("worker-*.log")))


# --------------------------------------------------------------------------- crash-test Celery app

_prefix = os.environ.get(BROKER_PREFIX_ENV)
if _prefix:  # only inside the crash test's worker processes
    import jivapay.worker.tasks  # noqa: F401  (registers orders.process)

    celery_app.conf.update(
        broker_transport_options={"global_keyprefix": _prefix},
        task_ignore_result=True,
    )
