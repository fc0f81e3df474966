"""With the broker down, an after-commit publish is one connection attempt and fails at once (the
chaos run: with Redis stopped, every intake request waited 6 s for kombu's reconnects, or 19 s for
the result backend's, and intake fell to under 1 order/s). The "broker" here is a real socket that
counts connections and closes each one; the sender is a real process with the project's Celery
configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SENDER = r"""
import socket, threading, os

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(50)
port = listener.getsockname()[1]
attempts = []

def serve():
    while True:
        conn, _ = listener.accept()
        attempts.append(1)
        conn.close()

threading.Thread(target=serve, daemon=True).start()
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"

from jivapay import task_queue

failures = 0
for _ in range(3):
    try:
        task_queue.send_task("orders.process", 1, **task_queue.PUBLISH_ONCE)
    except Exception:
        failures += 1
print(failures, len(attempts))
"""


def test_a_publish_with_the_broker_down_is_one_attempt() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_URL"))}
    result = subprocess.run(
        [sys.executable, "-c", SENDER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    failures, attempts = map(int, result.stdout.split())

    assert failures == 3  # each publish reports the failure (the sweepers re-send later)
    assert attempts == 3, result.stderr[-2000:]  # one connection each: no reconnect loop
