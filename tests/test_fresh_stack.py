"""`jivapay up` as a newcomer runs it, nothing configured: every service embedded under one home.

One stack, started twice on the same home: a PayIn from the demo credentials file gets a receipt and
its callbacks reach the demo webhook inbox with valid signatures;
`jivapay reconcile` and `jivapay worker-ping` attach to the running stack with no URL set; after a
restart the receipt's new link still downloads the same bytes (the embedded S3 keeps its objects).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jivapay import embedded
from jivapay.cli import INBOX_PORT, default_ports
from jivapay.security import compute_signature
from tests.sample_files import png_bytes

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 240.0
PNG = png_bytes()
# Variables a newcomer has not set (the test run's own are removed as well).
_UNSET_PREFIXES = ("DATABASE_", "REDIS_", "S3_", "CELERY_", "JIVAPAY_", "PUBLIC_BASE_URL")


def _free_offset() -> int:
    """An offset putting every server port in 18001-18996 (this suite's own range) that is free."""
    for offset in range(10000, 11000, 100):
        if all(embedded.port_is_free(p + offset) for p in default_ports().values()):
            return offset
    raise RuntimeError("no free port range for the stack")


@pytest.fixture
def newcomer_env() -> Iterator[dict[str, str]]:
    # The home is outside pytest's base temp (see tests/test_embedded.py: private_home).
    home = Path(tempfile.mkdtemp(prefix="jivapay-test-home-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(_UNSET_PREFIXES)}
    env.pop("ENVIRONMENT", None)
    env.pop("CALLBACK_ALLOW_PRIVATE_NETWORKS", None)
    env.update({"JIVAPAY_HOME": str(home), "LOG_LEVEL": "INFO"})
    try:
        yield env
    finally:
        embedded.stop_all(home, timeout=5)
        shutil.rmtree(home, ignore_errors=True)


class Stack:
    def __init__(self, env: dict[str, str], offset: int, log_dir: Path) -> None:
        self.env, self.offset, self.log_dir = env, offset, log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path = log_dir / "up-0.log"
        self.runs = 0

    def start(self) -> None:
        self.log = self.log_dir / f"up-{self.runs}.log"
        self.runs += 1
        argv = [sys.executable, "-m", "jivapay.cli", "up", "--port-offset", str(self.offset)]
        argv += ["--startup-timeout", str(STARTUP_TIMEOUT)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.wait_for(lambda: "stop: Ctrl-C" in self.log.read_text(), STARTUP_TIMEOUT + 60)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"`jivapay up` exited with {self.proc.returncode}:\n{self.output()}")
            if predicate():
                return
            time.sleep(0.5)
        pytest.fail(f"timed out after {timeout:.0f}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(60) == 0, self.output()
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait(5)


@pytest.fixture
def stack(newcomer_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    running = Stack(newcomer_env, _free_offset(), tmp_path)
    try:
        yield running
    finally:
        running.stop()
        embedded.stop_all(Path(newcomer_env["JIVAPAY_HOME"]), timeout=5)


def _signed(store: dict[str, Any], method: str, path: str, body: bytes = b"") -> dict[str, str]:
    ts = str(int(time.time()))
    return {
        "X-API-Key": store["public_api_key"],
        "X-Timestamp": ts,
        "X-Signature": compute_signature(store["private_api_key"], ts, method, path, body),
    }


def _status(base: str, store: dict[str, Any], order_id: str) -> dict[str, Any]:
    path = f"/gateway/payin/status/{order_id}"
    response = httpx.get(base + path, headers=_signed(store, "GET", path), timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jivapay.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_receipt_survives_a_restart_and_the_cli_finds_the_stack(
    stack: Stack, newcomer_env: dict[str, str]
) -> None:
    home = Path(newcomer_env["JIVAPAY_HOME"])
    stack.start()
    output = stack.output()
    assert "embedded PostgreSQL" in output and "embedded S3 (moto)" in output

    creds = json.loads((home / "demo-credentials.json").read_text())
    gateway = f"http://127.0.0.1:{default_ports()['gateway'] + stack.offset}"
    assert creds["servers"]["gateway"] == gateway  # this run's port, offset included
    assert creds["gateway_url"] == f"{gateway}/gateway"
    assert creds["admin"]["password"]  # generated on this first run and kept in the file
    store = next(s for s in creds["stores"] if s["fiat"] == "RUB")

    body = json.dumps(
        {
            "merchant_order_id": f"restart-{uuid.uuid4().hex[:8]}",
            "amount_fiat": "1500.00",
            "fiat_currency": "RUB",
        }
    ).encode()
    headers = _signed(store, "POST", "/gateway/payin/init", body)
    headers |= {"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"}
    created = httpx.post(f"{gateway}/gateway/payin/init", content=body, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    order_id = created.json()["order_id"]
    stack.wait_for(lambda: _status(gateway, store, order_id)["status"] == "pending", 90)

    confirmed = httpx.post(
        f"{gateway}/gateway/payin/confirm/{order_id}",
        files={"receipt": ("receipt.png", PNG, "image/png")},
        timeout=30,
    )
    assert confirmed.status_code == 200, confirmed.text
    [receipt] = _status(gateway, store, order_id)["receipts"]
    assert httpx.get(receipt["url"], timeout=10).content == PNG

    # The demo stores send their callbacks to the local inbox, which verifies their signatures.
    inbox = f"http://127.0.0.1:{INBOX_PORT + stack.offset}"

    def inbox_has_valid_callback() -> bool:
        received = httpx.get(f"{inbox}/callbacks.json", timeout=5).json()
        return any(e["order_id"] == order_id and e["signature"] == "valid" for e in received)

    stack.wait_for(inbox_has_valid_callback, 90)

    # No URL set: the commands attach to the running stack of JIVAPAY_HOME.
    reconcile = _cli(newcomer_env, "reconcile")
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    assert "reconciliation clean" in reconcile.stdout
    ping = _cli(newcomer_env, "worker-ping", "--timeout", "30")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "pong" in ping.stdout

    stack.stop()
    assert not (home / "run" / "stack.json").exists()
    for name in (embedded.POSTGRES, embedded.REDIS, embedded.S3):
        assert embedded.server_pid(home, name) is None, name
    stopped = _cli(newcomer_env, "reconcile")
    assert stopped.returncode == 1 and "no `jivapay up` is running" in stopped.stderr

    stack.start()
    assert "super admin created" not in stack.output()
    [again] = _status(gateway, store, order_id)["receipts"]
    assert again["id"] == receipt["id"]
    download = httpx.get(again["url"], timeout=10)
    assert download.status_code == 200, download.text
    assert download.content == PNG
