"""Test setup on the real PostgreSQL and Redis.

One database per xdist worker, migrated once with `alembic upgrade head`; every test runs inside an
outer transaction that is rolled back at the end (all sessions any layer opens are bound to it).
Tests that need real commits across connections or processes use `committed_db`, which truncates
afterwards. Servers come from `DATABASE_URL`/`REDIS_URL` when set, else embedded ones are started.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

os.environ.setdefault("ENVIRONMENT", "test")
os.environ.setdefault("CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")
os.environ.setdefault("LOG_JSON", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def _worker_index(worker_id: str) -> int:
    return 0 if worker_id == "master" else int(worker_id.removeprefix("gw")) + 1


def _base_database_url() -> str:
    url = os.environ.get("JIVAPAY_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    from jivapay import embedded

    return embedded.ensure_postgres(embedded.test_home())


def _base_redis_url() -> str:
    url = os.environ.get("JIVAPAY_TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        return url
    from jivapay import embedded

    return embedded.ensure_redis(embedded.test_home())


@pytest.fixture(scope="session")
def worker_index(worker_id: str) -> int:
    return _worker_index(worker_id)


@pytest.fixture(scope="session")
def redis_url(worker_index: int) -> str:
    """A Redis database number of this worker's own (keys are still namespaced by each test)."""
    base = make_url(_base_redis_url().replace("redis://", "postgresql://", 1))
    db = 1 + worker_index % 15
    host = base.host or "127.0.0.1"
    port = base.port or 6379
    url = f"redis://{host}:{port}/{db}"
    os.environ["JIVAPAY_TEST_REDIS_URL"] = _base_redis_url()
    os.environ["REDIS_URL"] = url
    return url


@pytest.fixture(scope="session")
def database_url(worker_index: int) -> Iterator[str]:
    """A fresh database of this test worker, migrated to head; dropped at the end."""
    from jivapay.database.engine import dispose_engine, normalize_database_url
    from jivapay.database.migrate import upgrade

    base = make_url(normalize_database_url(_base_database_url()))
    name = f"jivapay_test_{worker_index}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    os.environ["JIVAPAY_TEST_DATABASE_URL"] = _base_database_url()
    os.environ["DATABASE_URL"] = url
    from jivapay.config import reset_settings_cache

    reset_settings_cache()
    dispose_engine()
    upgrade("head", url=url)
    yield url
    dispose_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def services(database_url: str, redis_url: str) -> dict[str, str]:
    """Both real services configured for this worker; the environment points at them."""
    from jivapay.config import reset_settings_cache

    reset_settings_cache()
    return {"database_url": database_url, "redis_url": redis_url}


@pytest.fixture
def connection(services: dict[str, str]) -> Iterator[Connection]:
    from jivapay.database.engine import get_engine

    with get_engine().connect() as conn:
        trans = conn.begin()
        yield conn
        if trans.is_active:
            trans.rollback()


@pytest.fixture
def db(connection: Connection) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test.

    Every session opened during the test (request dependency, `read_session`, services) is bound to
    the same connection, so commits become savepoints and nothing outlives the test.
    """
    from jivapay.database.engine import bind_session_factory
    from jivapay.utils import config_loader

    factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    bind_session_factory(factory)
    config_loader.invalidate_cache()
    session = factory()
    try:
        yield session
    finally:
        session.close()
        bind_session_factory(None)
        config_loader.invalidate_cache()


def _truncate_all(conn: Connection) -> None:
    from jivapay.database.models import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def committed_db(services: dict[str, str]) -> Iterator[sessionmaker[Session]]:
    """Real commits visible to other connections and processes; every table truncated after."""
    from jivapay.database.engine import get_engine, get_session_factory
    from jivapay.utils import config_loader

    config_loader.invalidate_cache()
    factory = get_session_factory()
    try:
        yield factory
    finally:
        with get_engine().begin() as conn:
            _truncate_all(conn)
        config_loader.invalidate_cache()
        # Ids restart after the truncate: cached reference rows of this test must not leak.
        from jivapay.services import reference_data

        reference_data.clear_cache()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What is published through `task_queue.send_task` during the test, as (task name, first
    argument), instead of reaching the broker; every publish must be a single attempt."""
    from jivapay import task_queue

    out: list[tuple[str, Any]] = []

    def capture(name: str, *args: Any, **options: Any) -> None:
        assert options == task_queue.PUBLISH_ONCE
        out.append((name, args[0]))

    monkeypatch.setattr(task_queue, "send_task", capture)
    return out


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def unique() -> str:
    """A short random token for names, emails and keys unique to one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def _statements_built_by_the_code_under_test() -> None:
    """Forget the hot paths' statements built once per process (`balance_manager`'s hold, the
    order processor's assignment write, which holds the hold, the counters and the callback row),
    so every test builds them with the code it runs: mutation testing forks each mutant's run from
    a process that already built them from the unmutated code."""
    from jivapay.services import balance_manager, order_processor

    balance_manager._FREEZE_STATEMENTS.clear()
    order_processor._WRITE_ASSIGNMENT.clear()


@pytest.fixture(autouse=True)
def _no_callback_messages_from_earlier_tests() -> None:
    """Publish what an earlier test's commits left with the callback dispatcher (it lingers
    20 ms) before this test starts, so that it never lands in this test's captured messages."""
    from jivapay import callback_dispatch

    callback_dispatch.dispatcher.flush(10)


@pytest.fixture(autouse=True)
def _isolated_rate_limits() -> Iterator[None]:
    """Each test counts its own rate limits: every TestClient request comes from one client IP."""
    from jivapay.middleware.rate_limiting import reset_rate_limiter

    reset_rate_limiter(key_prefix=f"jivapay-rl-test-{uuid.uuid4().hex[:12]}")
    yield
    reset_rate_limiter()


@pytest.fixture
def celery_worker(services: dict[str, str], unique: str, tmp_path):  # type: ignore[no-untyped-def]
    """A real Celery worker process on a queue of this test's own (other runs share Redis), and
    the `jivapay intake-feed` that hands it the intake orders this test commits (this worker's
    database is its own, so no other test's NOTIFY reaches it).

    Tasks this process sends go to that queue too. The feed starts with the fixture; it yields a
    callable that starts (or restarts) the worker with a given concurrency and returns its Popen,
    so tests can kill it.
    """
    import subprocess
    import sys

    import redis

    from jivapay.worker.app import celery_app

    queue = f"jivapay-test-{unique}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    env = {
        **os.environ,
        "DATABASE_URL": services["database_url"],
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "CELERY_RESULT_BACKEND": celery_app.conf.result_backend,
        # Tasks the worker sends itself (retries, callbacks) stay on this test's queue too.
        "CELERY_TASK_QUEUE": queue,
        "LOG_LEVEL": "INFO",
    }
    procs: list[subprocess.Popen[bytes]] = []
    feeds: list[subprocess.Popen[bytes]] = []

    def start_feed() -> None:
        log = open(tmp_path / "intake-feed.log", "wb")  # noqa: SIM115 - lives with the process
        argv = [sys.executable, "-m", "jivapay.cli", "intake-feed", "--poll", "0.2"]
        feeds.append(
            subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def start(concurrency: int = 1, pool: str = "solo") -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115 - lives with the process
        argv = [sys.executable, "-m", "celery", "-A", "jivapay.worker.app:celery_app", "worker"]
        argv += [
            "--pool",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            queue,
            "--hostname",
            f"{unique}-{len(procs)}@%h",
        ]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    # Listening before the test commits anything: on connecting the feed catches up only the
    # orders of the last `CATCH_UP_SECONDS` (older ones are the sweeper's, which no test runs), and
    # a test that starts its worker later (the payer page's walk opens three pages first) may take
    # longer than that on a loaded machine. Its messages wait in the queue for the worker.
    start_feed()
    try:
        yield start
    finally:
        import signal

        for proc in procs + feeds:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs + feeds:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        celery_app.conf.task_default_queue = previous
        client = redis.Redis.from_url(celery_app.conf.broker_url)
        try:
            client.delete(queue, f"_kombu.binding.{queue}")
        finally:
            client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's, in this process on a free port) with the bucket made.

    The environment points `S3_*` at it for the whole session; tests that break it restore it.
    """
    from moto.server import ThreadedMotoServer

    from jivapay.config import reset_settings_cache
    from jivapay.embedded import S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY
    from jivapay.utils import s3_client

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    names = ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET_NAME")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(
        {
            "S3_ENDPOINT_URL": endpoint,
            "S3_ACCESS_KEY": S3_TEST_ACCESS_KEY,
            "S3_SECRET_KEY": S3_TEST_SECRET_KEY,
            "S3_BUCKET_NAME": f"jivapay-test-{uuid.uuid4().hex[:8]}",
        }
    )
    reset_settings_cache()
    s3_client.ensure_bucket()
    try:
        yield endpoint
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_settings_cache()
