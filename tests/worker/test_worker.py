"""The Celery app's configuration, the system tasks, and `jivapay worker-ping` against a real worker."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session
from typer.testing import CliRunner

from jivapay.cli import app
from jivapay.worker.app import celery_app
from jivapay.worker.scheduler import BEAT_SCHEDULE
from jivapay.worker.tasks import BEAT_LAST_KEY, heartbeat, ping


def test_celery_is_configured_for_safe_json_tasks(services: dict[str, str]) -> None:
    conf = celery_app.conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_retry_on_startup is True
    assert conf.broker_url.startswith("redis://")
    assert {"system.ping", "system.heartbeat"} <= set(celery_app.tasks)


def test_beat_schedule_runs_the_heartbeat() -> None:
    entry = BEAT_SCHEDULE["system-heartbeat"]
    assert entry["task"] == "system.heartbeat" and entry["task"] in celery_app.tasks
    assert entry["schedule"] == 60.0


def test_importing_the_worker_needs_no_redis() -> None:
    code = (
        "import jivapay.worker.tasks\n"
        "from jivapay.worker.app import celery_app\n"
        "assert not celery_app.configured\n"
        "print(celery_app.conf.broker_url)\n"
    )
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "redis://127.0.0.1:1/0"  # read lazily from the environment


def test_ping_task_touches_the_database(db: Session) -> None:
    answer = ping.apply().get()
    assert answer["pong"] is True and answer["hostname"]
    assert abs(datetime.fromisoformat(answer["at"]) - datetime.now(UTC)) < timedelta(minutes=1)


def test_heartbeat_records_the_last_beat_in_redis(services: dict[str, str], redis_client) -> None:
    try:
        at = heartbeat.apply().get()
        assert redis_client.get(BEAT_LAST_KEY) == at
        assert abs(datetime.fromisoformat(at) - datetime.now(UTC)) < timedelta(minutes=1)
    finally:
        redis_client.delete(BEAT_LAST_KEY)


def _delete_queue(queue: str) -> None:
    """Drop a test queue's keys from the broker (tasks left in it, its binding)."""
    import redis

    client = redis.Redis.from_url(celery_app.conf.broker_url)
    try:
        client.delete(queue, f"_kombu.binding.{queue}")
    finally:
        client.close()


def test_worker_ping_gets_a_pong_from_a_real_worker(
    services: dict[str, str], unique: str, tmp_path: Path
) -> None:
    queue = f"jivapay-test-{unique}"  # our own queue: other test runs share this Redis
    env = {
        **os.environ,
        "DATABASE_URL": services["database_url"],
        # Exactly what this process's Celery app uses, whatever the environment said before.
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "CELERY_RESULT_BACKEND": celery_app.conf.result_backend,
        "LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "jivapay.worker.app:celery_app",
                "worker",
                "--pool",
                "solo",
                "-c",
                "1",
                "-Q",
                queue,
                "--hostname",
                f"{unique}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        result = CliRunner().invoke(app, ["worker-ping", "--queue", queue, "--timeout", "60"])
        assert result.exit_code == 0, result.output + log_path.read_text()
        assert "pong from" in result.output and " ms " in result.output
        assert worker.poll() is None  # the worker is still up after answering
    finally:
        worker.terminate()
        try:
            code = worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait(5)
        _delete_queue(queue)
    assert code == 0  # SIGTERM is a clean (warm) shutdown for Celery


def test_worker_ping_fails_when_no_worker_listens(services: dict[str, str], unique: str) -> None:
    queue = f"nobody-{unique}"
    try:
        result = CliRunner().invoke(app, ["worker-ping", "--queue", queue, "--timeout", "1"])
        assert result.exit_code == 1
        assert "no worker answered" in result.output
    finally:
        _delete_queue(queue)
