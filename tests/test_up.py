"""`jivapay up` end to end: the whole stack starts, answers, and stops without leaving a process behind.

The stack gets a database of its own (migrated from empty and seeded by `up`, so the seeded demo
world never reaches other tests) and its own embedded Redis and S3 under a temporary home: its Celery
worker listens on the default queue, which must not be the one other test runs share.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from jivapay import embedded
from jivapay.cli import default_ports

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0


@pytest.fixture
def up_database(services: dict[str, str]) -> Iterator[str]:
    base = make_url(services["database_url"])
    name = f"jivapay_up_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _free_offset() -> int:
    """An offset at which no server port of the stack is taken (a dev stack may run on 800x)."""
    for offset in range(100, 2000, 100):
        if all(embedded.port_is_free(p + offset) for p in default_ports().values()):
            return offset
    raise RuntimeError("no free port range for the stack")


def _wait_for(predicate, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`jivapay up` exited with {proc.returncode}:\n{log.read_text()}")
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s; output:\n{log.read_text()}")


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=3.0).status_code
    except httpx.HTTPError:
        return None


def test_up_runs_the_whole_stack_and_stops_everything_on_sigterm(
    up_database: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    offset = _free_offset()
    ports = {name: port + offset for name, port in default_ports().items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "S3_", "CELERY_"))}
    env.update({"DATABASE_URL": up_database, "LOG_LEVEL": "INFO"})
    env.pop("JIVAPAY_ADMIN_PASSWORD", None)
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        argv = [sys.executable, "-m", "jivapay.cli", "up", "--home", str(home)]
        argv += ["--port-offset", str(offset), "--startup-timeout", str(STARTUP_TIMEOUT)]
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pids: set[int] = set()
    try:
        _wait_for(
            lambda: all(_status(f"http://127.0.0.1:{p}/health") == 200 for p in ports.values()),
            STARTUP_TIMEOUT,
            proc,
            log,
        )
        _wait_for(lambda: "stop: Ctrl-C" in log.read_text(), STARTUP_TIMEOUT, proc, log)
        # Each server becomes ready once its first database and Redis connections are made; on a
        # loaded machine (CI runs the chaos test beside this one) the first probe can outlast its
        # 3 s, so every server gets a deadline rather than one probe.
        for name, port in ports.items():
            _wait_for(lambda p=port: _status(f"http://127.0.0.1:{p}/ready") == 200, 60, proc, log)
            assert _status(f"http://127.0.0.1:{port}/ready") == 200, name

        output = log.read_text()
        assert f"http://127.0.0.1:{ports['gateway']}/docs" in output
        assert "super admin created" in output
        assert (home / "demo-credentials.json").exists()
        assert "embedded Redis" in output and "embedded S3" in output
        assert "embedded PostgreSQL" not in output  # DATABASE_URL was given
        assert "ready worker (ping" in output

        recorded = {path.stem: int(path.read_text()) for path in (home / "run").glob("*.pid")}
        assert set(ports) | {"worker", "beat", "up"} <= set(recorded)
        for name in (embedded.REDIS, embedded.S3):
            pid = embedded.server_pid(home, name)
            assert pid is not None, name
            recorded[name] = pid
        pids = set(recorded.values())
        pids |= {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
        assert all(embedded.process_alive(pid) for pid in pids)

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(STOP_TIMEOUT)
        assert code == 0, log.read_text()
        assert time.monotonic() - started < STOP_TIMEOUT
        still_running = [pid for pid in pids if embedded.process_alive(pid)]
        assert still_running == [], log.read_text()
        assert not list((home / "run").glob("*.pid"))  # pid files removed on a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in pids:
            if embedded.process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        embedded.stop_all(home, timeout=5)


def test_supervisor_reports_a_dead_child_and_kills_a_stubborn_one(tmp_path: Path) -> None:
    from jivapay.supervisor import ChildDied, ChildSpec, Supervisor

    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    supervisor = Supervisor(tmp_path, stop_timeout=1.0)
    try:
        kept = supervisor.start(ChildSpec("stubborn", [sys.executable, "-c", stubborn]))
        deadline = time.monotonic() + 10
        while "up" not in kept.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # its SIGTERM handler is installed once it printed
        supervisor.start(ChildSpec("dies", [sys.executable, "-c", "print('bye'); exit(3)"]))
        with pytest.raises(ChildDied) as died:
            supervisor.run(poll_interval=0.1)
        assert (died.value.name, died.value.returncode) == ("dies", 3)
        assert "bye" in died.value.log_path.read_text()
        assert (tmp_path / "run" / "stubborn.pid").read_text().strip() == str(kept.pid)
    finally:
        started = time.monotonic()
        supervisor.stop()
    assert time.monotonic() - started < 5
    assert kept.process.returncode == -signal.SIGKILL  # SIGTERM ignored: killed after the timeout
    assert not (tmp_path / "run" / "stubborn.pid").exists()
