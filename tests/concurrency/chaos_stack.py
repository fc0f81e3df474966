"""The chaos test's own servers, each one it may break: a throwaway PostgreSQL cluster (the machine's
`initdb`/`pg_ctl`), a Redis (`redis-server`), an S3 endpoint (moto, in this process), the API
servers (`jivapay serve` processes), the intake feed (`jivapay intake-feed`) and a sweeper process
that runs the beat's sweep tasks on a short period. Nothing here touches the shared PostgreSQL or Redis of the other tests.

Every class starts its process in its own session and `close()` kills it (and removes its data),
so a failing test leaves nothing running: `ChaosStack` closes them all in reverse order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.concurrency.workload import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], bool], what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"{what} did not come up in {timeout:.0f} s\n{tail}")
        time.sleep(0.1)


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _kill_group(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path:
    """The newest PostgreSQL installed on the machine (`/usr/lib/postgresql/<major>/bin`)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise FileNotFoundError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return found[-1].parent


class ThrowawayPostgres:
    """A cluster of this test only: `initdb` in a fresh directory, `pg_ctl` on a free port.

    PostgreSQL refuses to run as root, so under root it runs as the `postgres` system user, and
    its directory is made under the system temp dir (pytest's `tmp_path` lives in a 0700 folder
    of root that `postgres` cannot enter).
    """

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="jivapay-chaos-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self.port = free_port()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            user=self.user,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"{argv[0]} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300 "
            # No fsync: the machine does not crash, only PostgreSQL does, and the OS keeps what
            # was written. Commits stay synchronous: an acknowledged commit must survive the crash.
            "-c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- Redis


class ThrowawayRedis:
    """A `redis-server` of this test on a free port, no persistence: a stop loses every message."""

    def __init__(self, logs: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server is not installed")
        self.exe, self.logs, self.port = exe, logs, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.logs)]
        log = open(self.logs / "redis.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        _wait(lambda: _tcp_open(self.port), "redis-server", 30, self.logs / "redis.log")

    def stop(self) -> None:
        _kill_group(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()


# --------------------------------------------------------------------------- S3


class MotoS3:
    """moto's S3 server in this process. moto keeps its buckets in the process, so a `stop()` then
    `start()` on the same port is an outage that loses nothing."""

    ACCESS_KEY, SECRET_KEY = "chaos-access", "chaos-secret"

    def __init__(self, bucket: str) -> None:
        self.port, self.bucket = free_port(), bucket
        self.server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        _wait(lambda: _tcp_open(self.port), "moto S3", 30)

    def make_bucket(self) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            region_name="us-east-1",
        ).create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        self.stop()


# --------------------------------------------------------------------------- processes


class Process:
    """A Python child process in its own session, its output in `log`."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """`kill -9` of the process and everything it started."""
        _kill_group(self.proc)
        self.proc = None

    def close(self) -> None:
        _kill_group(self.proc, signal.SIGTERM)
        self.proc = None


class ApiServer(Process):
    """`jivapay serve --role ROLE` on a free port, started and waited for (`/health`)."""

    def __init__(self, role: str, env: dict[str, str], logs: Path) -> None:
        self.role, self.port = role, free_port()
        argv = ["-m", "jivapay.cli", "serve", "--role", role, "--port", str(self.port)]
        super().__init__(argv, env, logs / f"{role}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()

        def healthy() -> bool:
            assert self.alive(), self.log.read_text(errors="replace")[-3000:]
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, f"the {self.role} server", 90, self.log)


class Closing:
    """Anything with a stop function, as a part of the stack."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.close = stop


class ChaosStack:
    """Everything the chaos test started; `close()` stops all of it, last started first."""

    def __init__(self) -> None:
        self.parts: list[Any] = []

    def add(self, part: Any) -> Any:
        self.parts.append(part)
        return part

    def close(self) -> None:
        errors: list[str] = []
        for part in reversed(self.parts):
            try:
                part.close()
            except Exception as exc:  # keep closing the others
                errors.append(f"{type(part).__name__}: {exc!r}")
        assert not errors, errors
