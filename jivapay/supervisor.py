"""Process supervision for `jivapay up`: start children, wait for their health, stop them all.

Simple and predictable: each child (a uvicorn role server, the Celery worker, beat) runs in its own
process group with its output in `home/logs/<name>.log` and its pid in `home/run/<name>.pid`. If any
child exits while the stack runs, the supervisor reports it with the end of its log and the whole
stack shuts down with a non-zero exit. SIGINT/SIGTERM raise `ShutdownRequested` in the main thread;
shutdown sends SIGTERM to every child's process group (reaching uvicorn's and Celery's own
children), waits, then SIGKILLs what is left. On Linux children also get SIGTERM if the supervisor
itself is killed outright, so they never hold the ports of the next run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console

from jivapay.embedded import process_alive

STOP_TIMEOUT = 15.0
_PR_SET_PDEATHSIG = 1


class ShutdownRequested(BaseException):  # like KeyboardInterrupt: not caught by `except Exception`
    """SIGINT or SIGTERM arrived: stop everything and exit cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ChildDied(RuntimeError):
    """A supervised child exited on its own."""

    def __init__(self, name: str, returncode: int | None, log_path: Path) -> None:
        super().__init__(f"{name} exited with code {returncode} (log: {log_path})")
        self.name = name
        self.returncode = returncode
        self.log_path = log_path


class StartupTimeout(RuntimeError):
    """A child did not become healthy in time."""


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child: argv, extra environment, and an HTTP URL that answers 200 when healthy."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    health_url: str | None = None


@dataclass
class Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    pid_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file ('' when unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def shutdown_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `ShutdownRequested` in the main thread."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise ShutdownRequested(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Within the block SIGINT/SIGTERM are ignored, so a second Ctrl-C cannot interrupt cleanup."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Supervisor:
    """Starts, watches and stops the children of one `jivapay up` run."""

    def __init__(
        self,
        home: Path,
        *,
        env: Mapping[str, str] | None = None,
        console: Console | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.home = Path(home)
        self.logs_dir = self.home / "logs"
        self.run_dir = self.home / "run"
        self.base_env = dict(os.environ if env is None else env)
        self.console = console or Console(stderr=True)
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []

    def start(self, spec: ChildSpec) -> Child:
        """Start `spec` in its own process group, output to `logs/<name>.log`."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{spec.name}.log"
        env = {**self.base_env, **spec.env}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(  # noqa: S603 - argv built by the CLI, not user input
                list(spec.argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # safe: the supervisor runs no threads
            )
        pid_path = self.run_dir / f"{spec.name}.pid"
        pid_path.write_text(f"{process.pid}\n")
        child = Child(spec, process, log_path, pid_path)
        self.children.append(child)
        return child

    def pids(self) -> dict[str, int]:
        return {child.spec.name: child.pid for child in self.children}

    def check(self) -> None:
        """Raise `ChildDied` for the first child that has exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise ChildDied(child.spec.name, code, child.log_path)

    def wait_healthy(
        self, timeout: float, *, on_ready: Callable[[Child], None] | None = None
    ) -> None:
        """Poll every child's health URL until all answer 200; `StartupTimeout` after `timeout`."""
        pending = [c for c in self.children if c.spec.health_url]
        deadline = time.monotonic() + timeout
        while pending:
            self.check()
            for child in list(pending):
                if http_ok(child.spec.health_url or "", timeout=1.0):
                    pending.remove(child)
                    if on_ready:
                        on_ready(child)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(c.spec.name for c in pending)
                raise StartupTimeout(f"not healthy after {timeout:.0f}s: {names}")
            time.sleep(0.3)

    def run(self, poll_interval: float = 0.5) -> None:
        """Block until a child exits (`ChildDied`) or a signal arrives (`ShutdownRequested`)."""
        while True:
            self.check()
            time.sleep(poll_interval)

    def stop(self) -> None:
        """SIGTERM every child's process group, wait up to `stop_timeout`, SIGKILL what remains."""
        with signals_ignored():
            running = [c for c in self.children if c.process.poll() is None]
            for child in running:
                self._signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            for child in running:
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    child.process.wait(remaining)
                except subprocess.TimeoutExpired:
                    self.console.print(f"[yellow]{child.spec.name} did not stop: killing it[/]")
                    self._signal_group(child, signal.SIGKILL)
                    child.process.wait(5)
            # A group leader that exited may leave its own children behind (a pool process).
            for child in self.children:
                self._signal_group(child, signal.SIGKILL)
                with contextlib.suppress(FileNotFoundError):
                    child.pid_path.unlink()
            self.children.clear()

    @staticmethod
    def _signal_group(child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def any_alive(pids: Sequence[int]) -> list[int]:
    """The pids of `pids` still running (zombies excluded)."""
    return [pid for pid in pids if process_alive(pid)]
