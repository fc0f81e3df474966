"""PayIn intake throughput and latency against the real gateway, next to a bare FastAPI endpoint
that inserts one row through the same engine (the reference), both served the same way and loaded
from a separate process. The gateway runs as production runs it, `jivapay serve --role gateway`;
the reference through bench/serve.py with the same uvicorn options (`uvicorn_options`: the httptools
protocol with the slow-client deadlines). One uvicorn process each, or `--processes N` each
(`deploy/compose.yaml` serves the gateway with 2).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/intake.py --requests 3000 --concurrency 16

`jivapay intake-feed` runs beside them, as in production: it hears each committed intake (PostgreSQL
NOTIFY) and publishes the Celery messages; its CPU per intake is printed, and at the end the bench
counts the orders in the broker's queue against the intake rows (every one handed over).
Each load's line also says how many PostgreSQL connections the server opened during it
(`pg_stat_database.sessions`): a pool that churns shows there, and the CPU of a connection that
opened and closed inside a load is not in the PostgreSQL CPU figure.

Targets: gateway intake requests/s at least 0.6x the bare endpoint's (P3); peak resident memory
of the gateway's API process under 200 MB during the run (P4, sampled with psutil). Each server's
CPU time per request (psutil, user + system) is printed too: on a machine shared with other jobs
it moves far less than requests/s. `--rounds 3` measures the two endpoints alternately three times
and judges P3 by the median ratio, as the machine's speed drifts between one load and the next.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import ROOT, free_port, percentiles, scratch_database, stop, use_database, wait_http
from sqlalchemy.engine import make_url


def _world(url: str) -> tuple[str, str]:
    """A store ready for PayIn intake; returns its (public, private) keys."""
    from sqlalchemy import text

    from jivapay.database.utils import atomic_transaction
    from jivapay.utils.config_loader import set_config_value
    from tests.factories import make_reference, make_store

    with atomic_transaction() as session:
        ref = make_reference(session, rate=Decimal("92.5"))
        world = make_store(session, ref, lower=Decimal("1"), upper=Decimal("1000000"))
        for key in ("RATE_LIMIT_DEFAULT", "RATE_LIMIT_GATEWAY", "RATE_LIMIT_GATEWAY_INIT"):
            set_config_value(session, key, "10000000/minute")
        session.execute(
            text(
                "CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY, payload JSONB NOT NULL, "
                "created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        )
        return world.public_key, world.private_key, ref.fiat.code  # type: ignore[return-value]


def _payin_requests(public: str, private: str, fiat: str, count: int) -> list[dict[str, object]]:
    from jivapay.security import compute_signature

    path = "/gateway/payin/init"
    out = []
    for i in range(count):
        body = json.dumps(
            {
                "merchant_order_id": f"bench-{uuid.uuid4().hex}",
                "amount_fiat": f"{100 + i % 900}.50",
                "fiat_currency": fiat,
                "customer_id": f"c{i % 500}",
            }
        )
        ts = str(int(time.time()))
        out.append(
            {
                "path": path,
                "body": body,
                "headers": {
                    "X-API-Key": public,
                    "X-Timestamp": ts,
                    "X-Signature": compute_signature(private, ts, "POST", path, body.encode()),
                    "Idempotency-Key": uuid.uuid4().hex,
                    "Content-Type": "application/json",
                },
            }
        )
    return out


def _bare_requests(count: int) -> list[dict[str, object]]:
    return [
        {
            "path": "/bare",
            "body": json.dumps({"merchant_order_id": uuid.uuid4().hex, "amount_fiat": "100.50"}),
            "headers": {"Content-Type": "application/json"},
        }
        for _ in range(count)
    ]


def _serve(
    cmd: list[str], env: dict[str, str], profile_to: str | None = None
) -> subprocess.Popen[bytes]:
    if profile_to:
        # py-spy samples the server from outside; collapsed stacks are summarised at the end.
        spy = str(Path(sys.executable).with_name("py-spy"))
        # --gil: only the thread holding the GIL, so idle threadpool threads are not counted.
        spy_cmd = [spy, "record", "--gil", "--format", "raw", "--rate", "250", "-o", profile_to]
        cmd = [*spy_cmd, "--", *cmd]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _summarise_profile(path: str, top: int = 60) -> None:
    """Print where the sampled server spent its time: inclusive share of each JivaPay and library
    function, from py-spy's collapsed stacks."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name = (
                frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
            )
            if name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + n
    print(f"\nserver profile ({total} samples), inclusive share:")
    for name, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / max(total, 1):5.1f}%  {name}")


class RssWatch:
    """Peak resident memory of a server process (and its children, e.g. under py-spy), sampled with
    psutil in a thread while the load runs; on Linux the kernel's own high-water mark (VmHWM) of
    each process is taken too, so a short peak between two samples is not missed."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peak = 0
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self) -> list[Any]:
        import psutil

        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> None:
        import psutil

        for proc in self._processes():
            with contextlib.suppress(psutil.Error, OSError, ValueError):
                self.peak = max(self.peak, proc.memory_info().rss)
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _load(
    url: str, requests: list[dict[str, object]], concurrency: int, rate: float | None = None
) -> dict[str, object]:
    """Closed loop at `concurrency`, or open loop at `rate` requests/s (bench/loadgen.py)."""
    spec = json.dumps({"url": url, "requests": requests, "concurrency": concurrency, "rate": rate})
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loadgen.py")],
        input=spec.encode(),
        capture_output=True,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server process and its children (py-spy's too, when profiling)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _postgres_cpu_seconds() -> dict[int, float]:
    """User + system CPU time of each of this machine's PostgreSQL processes, by pid (empty when
    the server is elsewhere): with the server on the same cores, its work per request competes
    with the API's."""
    import psutil

    seconds = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                seconds[proc.pid] = times.user + times.system
    return seconds


def _postgres_cpu_spent(before: dict[int, float]) -> float:
    """PostgreSQL CPU seconds spent since `before`: a backend started since counts whole, one that
    ended since counts nothing (its last CPU cannot be read), nor does one that did both."""
    after = _postgres_cpu_seconds()
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _sessions(url: str) -> int:
    """Connections ever opened to the run's database (`pg_stat_database.sessions`): the difference
    over a load is the connections its server opened, which the pool should keep, not churn."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def _measured_load(
    url: str, pid: int, requests: list[dict[str, object]], concurrency: int, database: str
) -> tuple[dict[str, object], float, float]:
    """The load's result, and the server's and PostgreSQL's CPU milliseconds per request: figures
    the other jobs of a shared machine disturb much less than requests/s."""
    sessions_before = _sessions(database)
    before, pg_before = _cpu_seconds(pid), _postgres_cpu_seconds()
    result = _load(url, requests, concurrency)
    count = max(len(requests), 1)
    pg_spent = _postgres_cpu_spent(pg_before)
    # Less the connection the first count opened for itself.
    result["connections"] = _sessions(database) - sessions_before - 1
    return (result, 1000 * (_cpu_seconds(pid) - before) / count, 1000 * pg_spent / count)


def _feed(env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "jivapay.cli", "intake-feed"]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _queued_order_ids(redis_url: str, queue: str) -> int:
    """How many intake order ids the messages waiting in `queue` carry (nobody consumes them here)."""
    import base64

    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        count = 0
        for raw in client.lrange(queue, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            count += len(args[0]) if isinstance(args[0], list) else 1
        return count
    finally:
        client.close()


def _intake_rows(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM incoming_orders")).scalar_one())
    finally:
        engine.dispose()


def _wait_feed(url: str, timeout: float = 120.0) -> None:
    """Until the intake feed is connected to the run's database (it `LISTEN`s right after). Orders
    committed before it listens are handed over by its catch-up only if they are under 10 s old,
    and on a loaded machine its start-up can take longer than the servers' and the warm-up."""
    from sqlalchemy import create_engine, text

    from jivapay.worker.intake_feed import APPLICATION_NAME

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = :name"
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(query, {"name": APPLICATION_NAME}).scalar_one():
                    time.sleep(0.5)  # its LISTEN and catch-up follow the connection
                    return
            time.sleep(0.2)
        raise RuntimeError("the intake feed did not connect")
    finally:
        engine.dispose()


def _not_2xx(result: dict[str, object]) -> int:
    statuses = result["statuses"]
    assert isinstance(statuses, dict)
    return sum(int(n) for status, n in statuses.items() if not str(status).startswith("2"))


def _report(name: str, result: dict[str, object], cpu_ms: float, pg_ms: float) -> float:
    latencies = result["latencies"]
    assert isinstance(latencies, list)
    rps = len(latencies) / float(result["elapsed"])  # type: ignore[arg-type]
    p = percentiles(latencies)
    connections = result.get("connections", 0)
    print(
        f"{name:<16} {rps:8.1f} req/s   p50 {p['p50']:6.1f} ms   p99 {p['p99']:6.1f} ms   "
        f"max {p['max']:6.1f} ms   server CPU {cpu_ms:5.2f} ms/req   PostgreSQL CPU {pg_ms:5.2f} "
        f"ms/req ({connections} connections opened)   "
        f"statuses {result['statuses']}"
    )
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--paced-seconds",
        type=float,
        default=15,
        help="length of the open-loop run at half the measured maximum rate (P3's latency)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure bare and payin/init alternately this many times; P3's ratio is the median",
    )
    parser.add_argument("--profile", action="store_true", help="sample the gateway with py-spy")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="uvicorn worker processes of each server (the gateway and the bare endpoint alike)",
    )
    args = parser.parse_args()

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/14"
    with scratch_database("jivapay_bench_intake") as url:
        os.environ["REDIS_URL"] = redis_url
        use_database(url)
        public, private, fiat = _world(url)
        # The run's own queue: a second run at the same time counts and deletes only its own.
        queue = f"jivapay-bench-intake-{os.getpid()}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "INFO",
            "CELERY_TASK_QUEUE": queue,
        }
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'bench'}"
        gw_port, bare_port = free_port(), free_port()
        profile_to = "/tmp/jivapay-intake-profile.txt" if args.profile else None
        feed = _feed(env)
        workers = str(args.processes)
        # The gateway as production serves it; the reference with the same uvicorn options.
        jivapay = str(Path(sys.executable).with_name("jivapay"))
        gateway = [jivapay, "serve", "--role", "gateway", "--port", str(gw_port)]
        bare = [sys.executable, str(ROOT / "bench" / "serve.py"), "bare_app:app", str(bare_port)]
        servers = [
            _serve([*gateway, "--workers", workers], env, profile_to),
            _serve([*bare, workers], {**env, "PYTHONPATH": f"{ROOT / 'bench'}{os.pathsep}{ROOT}"}),
        ]
        try:
            wait_http(f"http://127.0.0.1:{gw_port}/health")
            wait_http(f"http://127.0.0.1:{bare_port}/docs")
            _wait_feed(url)
            print(
                f"intake benchmark: {args.requests} requests, concurrency {args.concurrency}, "
                f"{args.processes} uvicorn process{'es' if args.processes > 1 else ''} each"
            )
            bare_url, gw_url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{gw_port}"
            _load(bare_url, _bare_requests(args.warmup), args.concurrency)
            with RssWatch(servers[0].pid) as rss:
                _load(gw_url, _payin_requests(public, private, fiat, args.warmup), args.concurrency)
                rates: list[float] = []
                refused = 0
                ratios: list[float] = []
                cpu_ratios: list[float] = []
                feed_cpu: list[float] = []
                for round_number in range(1, args.rounds + 1):
                    if args.rounds > 1:
                        print(f"round {round_number} of {args.rounds}")
                    bare_result, bare_cpu, bare_pg = _measured_load(
                        bare_url,
                        servers[1].pid,
                        _bare_requests(args.requests),
                        args.concurrency,
                        url,
                    )
                    bare = _report("bare insert", bare_result, bare_cpu, bare_pg)
                    feed_before = _cpu_seconds(feed.pid)
                    gateway_result, gateway_cpu, gateway_pg = _measured_load(
                        gw_url,
                        servers[0].pid,
                        _payin_requests(public, private, fiat, args.requests),
                        args.concurrency,
                        url,
                    )
                    feed_cpu.append(1000 * (_cpu_seconds(feed.pid) - feed_before) / args.requests)
                    gateway = _report("payin/init", gateway_result, gateway_cpu, gateway_pg)
                    rates.append(gateway)
                    ratios.append(gateway / bare)
                    refused += _not_2xx(bare_result) + _not_2xx(gateway_result)
                    cpu_ratios.append(bare_cpu / gateway_cpu)
                half = statistics.median(rates) / 2
                paced = _load(
                    gw_url,
                    _payin_requests(public, private, fiat, int(half * args.paced_seconds)),
                    args.concurrency,
                    rate=half,
                )
            ratio = statistics.median(ratios)
            each = (
                f", the median of {' / '.join(f'{r:.2f}' for r in ratios)}"
                if args.rounds > 1
                else ""
            )
            verdict = "PASS" if ratio >= 0.6 else "FAIL"
            if refused:  # a 429 or an error is cheaper than an intake: the figure means nothing
                verdict = f"INVALID ({refused} answers were not 2xx)"
            print(f"P3 ratio payin/init / bare = {ratio:.2f}{each} (target >= 0.60): {verdict}")
            paced_latencies = paced["latencies"]
            assert isinstance(paced_latencies, list)
            p = percentiles(paced_latencies)
            print(
                f"P3 latency at half the maximum rate ({half:.1f} req/s open loop, "
                f"{len(paced_latencies)} requests, statuses {paced['statuses']}): "
                f"p50 {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms (target p99 < 50 ms): "
                f"{'PASS' if p['p99'] < 50 else 'FAIL'}"
            )
            print(
                "server CPU per request, bare / payin/init = "
                + " / ".join(f"{r:.2f}" for r in cpu_ratios)
                + " (what bounds the requests/s ratio when the server process is CPU-bound)"
            )
            print(
                "intake feed CPU per intake (NOTIFY heard, Celery message published) = "
                + " / ".join(f"{ms:.2f}" for ms in feed_cpu)
                + " ms"
            )
            rows, deadline = _intake_rows(url), time.monotonic() + 30
            while (
                handed := _queued_order_ids(redis_url, queue)
            ) < rows and time.monotonic() < deadline:
                time.sleep(0.5)
            print(
                f"intake feed handed {handed} of {rows} committed intake orders to the broker: "
                f"{'PASS' if handed == rows else 'FAIL'}"
            )
            peak = rss.peak / 2**20
            print(
                f"P4 gateway API process peak RSS = {peak:.0f} MB (target < 200 MB): "
                f"{'PASS' if peak < 200 else 'FAIL'}"
            )
        finally:
            for proc in [*servers, feed]:
                stop(proc)
            if profile_to and Path(profile_to).exists():
                _summarise_profile(profile_to)
            import redis

            client = redis.Redis.from_url(redis_url)
            # The run's queue and its deployment's keys (`jivapay:<database>:*`); the rate
            # limiter's counters expire by themselves.
            client.delete(queue, f"_kombu.binding.{queue}")
            for key in client.scan_iter(match=f"jivapay:{make_url(url).database}:*", count=1000):
                client.delete(key)
            client.close()


if __name__ == "__main__":
    main()
