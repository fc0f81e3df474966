"""Shared plumbing of the benchmarks: a scratch database on the `DATABASE_URL` server, latency
percentiles, and small process helpers. Benchmarks print figures; they assert nothing."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def base_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit(
            "set DATABASE_URL to a PostgreSQL server (the benchmark creates its own database)"
        )
    return url


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create, migrate and finally drop a database of this run; yields its URL."""
    from jivapay.database.engine import normalize_database_url
    from jivapay.database.migrate import upgrade

    base = make_url(normalize_database_url(base_url()))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade("head", url=url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def use_database(url: str) -> None:
    """Point this process's jivapay engine at `url`."""
    from jivapay.config import reset_settings_cache
    from jivapay.database.engine import dispose_engine

    os.environ["DATABASE_URL"] = url
    reset_settings_cache()
    dispose_engine()


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max of `samples` (seconds), in milliseconds."""
    if not samples:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples)
    q = (
        statistics.quantiles(ordered, n=100, method="inclusive")
        if len(ordered) > 1
        else ordered * 99
    )
    return {
        "p50": q[49] * 1000,
        "p90": q[89] * 1000,
        "p99": q[98] * 1000,
        "max": ordered[-1] * 1000,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server: SIGINT first (uvicorn and py-spy both finish cleanly on it), then harder."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
