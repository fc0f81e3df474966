"""The embedded servers: start, reuse on a second call, stop from pid files, restart on the same data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from jivapay import embedded

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    path.mkdir()
    try:
        yield path
    finally:
        embedded.stop_all(path, timeout=5)


def _execute(url: str, *statements: str) -> object:
    """Run `statements` in one transaction; the last one's scalar result."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            results = [conn.execute(text(sql)) for sql in statements]
            return results[-1].scalar() if results[-1].returns_rows else None
    finally:
        engine.dispose()


def test_postgres_starts_is_reused_stops_and_keeps_its_data(home: Path) -> None:
    first = embedded.postgres_server(home)
    assert first.started and first.url.startswith("postgresql://postgres:@127.0.0.1:")
    url = embedded.ensure_database(first.url, "jivapay")
    _execute(url, "CREATE TABLE kept (v text)", "INSERT INTO kept VALUES ('still here')")

    again = embedded.postgres_server(home)
    assert (again.started, again.url, again.pid) == (False, first.url, first.pid)

    assert embedded.stop_server(home, embedded.POSTGRES) is True
    assert embedded.server_pid(home, embedded.POSTGRES) is None
    assert not embedded.process_alive(first.pid)

    restarted = embedded.postgres_server(home)
    assert restarted.started and restarted.pid != first.pid
    assert restarted.url == first.url  # same port while it is free
    url = embedded.ensure_database(restarted.url, "jivapay")
    assert _execute(url, "SELECT v FROM kept") == "still here"


def test_redis_starts_is_reused_stops_and_keeps_its_data(home: Path) -> None:
    first = embedded.redis_server(home)
    assert first.started
    client = redis.Redis.from_url(first.url, decode_responses=True)
    client.set("kept", "yes")
    client.close()
    assert embedded.ensure_redis(home) == first.url
    assert embedded.redis_server(home).started is False

    assert embedded.stop_all(home) == [embedded.REDIS]
    assert embedded.server_pid(home, embedded.REDIS) is None
    assert not embedded.process_alive(first.pid)

    second = embedded.redis_server(home)
    assert second.started and second.pid != first.pid
    client = redis.Redis.from_url(second.url, decode_responses=True)
    assert client.get("kept") == "yes"  # append-only file replayed
    client.close()


def test_s3_server_serves_buckets_and_stops(home: Path) -> None:
    server = embedded.s3_server(home)
    assert server.started and server.url.startswith("http://127.0.0.1:")
    embedded.ensure_bucket(server.url, "jivapay-test-bucket")
    embedded.ensure_bucket(server.url, "jivapay-test-bucket")  # idempotent

    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert "jivapay-test-bucket" in {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert embedded.ensure_s3(home) == server.url
    assert embedded.stop_all(home) == [embedded.S3]
    assert not embedded.process_alive(server.pid)


def test_terminate_pid_kills_a_process_that_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ok"
    started = time.monotonic()
    assert embedded.terminate_pid(proc.pid, sig=signal.SIGTERM, timeout=0.5) is True
    # It ignored SIGTERM, so only the SIGKILL after the timeout can have ended it.
    assert not embedded.process_alive(proc.pid)
    assert 0.5 <= time.monotonic() - started < 5
    proc.wait(5)
    assert embedded.terminate_pid(proc.pid) is False  # already gone


def test_free_port_prefers_the_given_port_when_free() -> None:
    port = embedded.free_port()
    assert embedded.free_port(port) == port
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert embedded.port_is_free(port) is False
        assert embedded.free_port(port) != port


_START_PG = """
import sys
from pathlib import Path
from jivapay import embedded
server = embedded.postgres_server(Path(sys.argv[1]))
print(server.url, server.pid, server.started)
"""


def test_two_processes_starting_postgres_at_once_get_one_server(home: Path) -> None:
    # The xdist workers of one test run used to race on initdb and pg_ctl in the same directory.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _START_PG, str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [proc.communicate(timeout=180) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in results]
    answers = [out.split() for out, _ in results]
    assert len({(url, pid) for url, pid, _ in answers}) == 1  # one server, the same for all
    assert sorted(started for _, _, started in answers) == ["False", "False", "True"]
    assert embedded.server_pid(home, embedded.POSTGRES) == int(answers[0][1])


def test_scripts_test_helpers_start_then_stop_what_they_started(tmp_path: Path) -> None:
    test_home = tmp_path / "test-home"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["JIVAPAY_TEST_HOME"] = str(test_home)
    try:
        start = subprocess.run(
            [sys.executable, "-m", "jivapay.embedded", "start-test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in start.stdout.splitlines()
        )
        assert exports["JIVAPAY_TEST_STARTED"].strip("'") == "pg redis"
        assert exports["DATABASE_URL"].startswith("postgresql://")
        assert exports["REDIS_URL"].startswith("redis://127.0.0.1:")
        pids = [embedded.server_pid(test_home, n) for n in (embedded.POSTGRES, embedded.REDIS)]
        assert all(pids)

        stop = subprocess.run(
            [sys.executable, "-m", "jivapay.embedded", "stop-test", "pg", "redis"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stop.returncode == 0, stop.stderr
        assert "embedded PostgreSQL of this test run: stopped" in stop.stderr
        assert "embedded Redis of this test run: stopped" in stop.stderr
        assert not any(embedded.process_alive(pid) for pid in pids)
    finally:
        embedded.stop_all(test_home, timeout=5)
