"""The `jivapay` CLI in-process (Typer's CliRunner) against the test database.

Commands open their own transaction with `atomic_transaction`; under the `db` fixture that session is
bound to the test's connection, so what they commit is rolled back after the test.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from jivapay.cli import app, default_ports
from jivapay.database.models import User
from jivapay.security import verify_password

runner = CliRunner()


def test_db_current_reports_head(services: dict[str, str]) -> None:
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 0, result.output
    from alembic.script import ScriptDirectory

    from jivapay.database.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None and f"{head} (head)" in result.output


def test_db_upgrade_at_head_is_a_no_op(services: dict[str, str]) -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "upgraded to" in result.output and "(head)" in result.output


@pytest.fixture
def empty_database(services: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of its own, with no schema; the process points at it during the test."""
    from jivapay.config import reset_settings_cache
    from jivapay.database.engine import dispose_engine

    base = make_url(services["database_url"])
    name = f"jivapay_cli_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    reset_settings_cache()
    dispose_engine()
    try:
        yield url
    finally:
        dispose_engine()
        monkeypatch.undo()
        reset_settings_cache()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_db_upgrade_downgrade_round_trip_on_an_empty_database(empty_database: str) -> None:
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 0 and "base (empty database)" in result.output

    result = runner.invoke(app, ["db", "upgrade", "head"])
    assert result.exit_code == 0, result.output
    assert "(head)" in result.output

    result = runner.invoke(app, ["db", "downgrade", "base", "--yes"])
    assert result.exit_code == 0, result.output
    assert "base (empty database)" in result.output

    engine = create_engine(empty_database)
    with engine.connect() as conn:
        tables = conn.execute(
            text(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'users'"
            )
        ).scalar()
    engine.dispose()
    assert tables == 0


def test_db_downgrade_asks_first_and_refuses_without_a_terminal(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["db", "upgrade", "head"]).exit_code == 0

    piped = runner.invoke(app, ["db", "downgrade", "base"])
    assert piped.exit_code == 1 and "--yes" in piped.output
    monkeypatch.setattr("jivapay.cli._interactive", lambda: True)
    declined = runner.invoke(app, ["db", "downgrade", "base"], input="n\n")
    assert declined.exit_code == 1 and "dropping its data?" in declined.output
    assert "(head)" in runner.invoke(app, ["db", "current"]).output  # nothing was reverted

    confirmed = runner.invoke(app, ["db", "downgrade", "base"], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "base (empty database)" in confirmed.output


def test_create_user_reads_the_password_from_stdin_not_the_command_line(
    db: Session, unique: str
) -> None:
    email = f"cli-{unique}@example.com"
    argv = ["create-user", "--email", email, "--role", "trader"]
    refused = runner.invoke(app, [*argv, "--password", "s3cret-pass"])
    assert refused.exit_code == 2  # no such option: argv is visible to every user of the machine
    result = runner.invoke(app, argv, input="s3cret-pass\n")
    assert result.exit_code == 0, result.output
    assert "created trader" in result.output and "s3cret-pass" not in result.output
    user = db.scalars(select(User).where(User.email == email)).one()
    assert user.role == "trader"
    assert verify_password("s3cret-pass", user.password_hash)


def test_create_user_prompts_for_a_hidden_password(db: Session, unique: str) -> None:
    email = f"cli-prompt-{unique}@example.com"
    result = runner.invoke(
        app,
        ["create-user", "--email", email, "--role", "support", "--template", "support_readonly"],
        input="typed-pass-1\ntyped-pass-1\n",
    )
    assert result.exit_code == 0, result.output
    assert "typed-pass-1" not in result.output  # hidden input is not echoed
    assert db.scalars(select(User.id).where(User.email == email)).one_or_none() is not None


def test_create_user_twice_fails_with_a_clear_error(db: Session, unique: str) -> None:
    args = ["create-user", "--email", f"dup-{unique}@example.com", "--role", "merchant"]
    assert runner.invoke(app, args, input="pw-123456\n").exit_code == 0
    result = runner.invoke(app, args, input="pw-123456\n")
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_seed_prints_the_generated_admin_password_once(
    db: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jivapay.config import reset_settings_cache

    monkeypatch.delenv("JIVAPAY_ADMIN_PASSWORD", raising=False)
    reset_settings_cache()
    output = tmp_path / "creds.json"
    result = runner.invoke(app, ["seed", "--demo", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "super admin created" in result.output and "password:" in result.output
    assert output.exists()
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert json.loads(output.read_text())["logins"]

    again = runner.invoke(app, ["seed"])
    assert again.exit_code == 0, again.output
    assert "the one shown when it was generated" in again.output and "password:" not in again.output


def test_serve_rejects_an_unknown_role() -> None:
    result = runner.invoke(app, ["serve", "--role", "nope"])
    assert result.exit_code == 2
    assert "must be one of" in result.output


def test_worker_rejects_an_unknown_pool() -> None:
    result = runner.invoke(app, ["worker", "--pool", "gevent"])
    assert result.exit_code == 2


def test_default_ports_follow_the_plan() -> None:
    assert default_ports() == {
        "merchant": 8001,
        "trader": 8002,
        "gateway": 8003,
        "admin": 8004,
        "support": 8005,
        "teamlead": 8006,
    }


def test_down_stops_the_embedded_servers_left_in_a_home(tmp_path: Path) -> None:
    from jivapay import embedded

    home = tmp_path / "home"
    server = embedded.redis_server(home)
    try:
        result = runner.invoke(app, ["down", "--home", str(home)])
        assert result.exit_code == 0, result.output
        assert "embedded servers stopped: redis" in result.output
        assert embedded.server_pid(home, embedded.REDIS) is None
        assert not embedded.process_alive(server.pid)
    finally:
        embedded.stop_all(home)


def test_reconcile_clean_then_reports_a_discrepancy(db) -> None:  # type: ignore[no-untyped-def]
    from decimal import Decimal

    from typer.testing import CliRunner

    from jivapay.cli import app
    from jivapay.database.models import BalanceTrader
    from tests.factories import make_reference, make_trader

    ref = make_reference(db)
    trader = make_trader(db, ref, deposit=Decimal("100"))
    db.commit()
    runner = CliRunner()
    clean = runner.invoke(app, ["reconcile"])
    assert clean.exit_code == 0, clean.output
    assert "clean" in clean.output

    balance = db.query(BalanceTrader).filter_by(trader_id=trader.id).one()
    balance.balance = Decimal("150")  # money appearing without history
    db.commit()
    broken = runner.invoke(app, ["reconcile"])
    assert broken.exit_code == 1
    assert (
        "store balance" not in broken.output and "trader deposit = sum of history" in broken.output
    )


def test_set_password_reads_stdin_and_the_new_password_logs_in(db: Session, unique: str) -> None:
    from jivapay.database.models import AuditLog

    email = f"reset-{unique}@example.com"
    assert (
        runner.invoke(
            app, ["create-user", "--email", email, "--role", "merchant"], input="old-pw-1\n"
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["set-password", "--email", email.upper()], input="new-pw-2\n")
    assert result.exit_code == 0, result.output
    assert "password set" in result.output and "new-pw-2" not in result.output
    user = db.scalars(select(User).where(User.email == email)).one()
    db.refresh(user)
    assert verify_password("new-pw-2", user.password_hash)
    assert not verify_password("old-pw-1", user.password_hash)
    assert user.token_version == 1  # the tokens issued with the old password stop
    audit = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "user.password_reset_cli", AuditLog.target_id == str(user.id)
        )
    ).all()
    assert len(audit) == 1


def test_set_password_for_an_unknown_email_fails_in_one_line(db: Session, unique: str) -> None:
    result = runner.invoke(
        app, ["set-password", "--email", f"nobody-{unique}@example.com"], input="x-123456\n"
    )
    assert result.exit_code == 1
    assert "no user with email" in result.output


def _cli_env(home: Path, **extra: str) -> dict[str, str]:
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
        and not k.startswith(("S3_", "JIVAPAY_TEST_"))
    }
    env.update({"JIVAPAY_HOME": str(home), **extra})
    return env


def _run_cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jivapay.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["reconcile"], "DATABASE_URL"),
        (["db", "current"], "DATABASE_URL"),
        (["worker-ping", "--timeout", "2"], "REDIS_URL"),
        (["set-password", "--email", "a@example.com"], "DATABASE_URL"),
    ],
)
def test_without_urls_or_a_running_stack_commands_fail_in_one_line(
    tmp_path: Path, args: list[str], variable: str
) -> None:
    result = _run_cli(_cli_env(tmp_path / "home"), *args, stdin="pw-123456\n")
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines  # no traceback
    assert lines[0].startswith("error: ") and variable in lines[0]
    assert "no `jivapay up` is running in" in lines[0]


def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = _cli_env(tmp_path, DATABASE_URL="postgresql://postgres@127.0.0.1:9/none")
    result = _run_cli(env, "db", "current")
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the database"), lines


def test_commands_attach_to_the_running_stack_of_their_home(
    services: dict[str, str], tmp_path: Path
) -> None:
    from jivapay.cli import stack_file

    home = tmp_path / "home"
    # Stands in for `jivapay up`: a live process whose command line names jivapay.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "jivapay-up-stand-in"]
    )
    try:
        path = stack_file(home)
        path.parent.mkdir(parents=True)
        path.write_text(
            json.dumps(
                {
                    "pid": holder.pid,
                    "env": {
                        "DATABASE_URL": services["database_url"],
                        "REDIS_URL": services["redis_url"],
                    },
                    "servers": {},
                }
            )
        )
        result = _run_cli(_cli_env(home), "db", "current")
        assert result.returncode == 0, result.stderr
        assert "(head)" in result.stdout

        holder.kill()
        holder.wait(5)
        gone = _run_cli(_cli_env(home), "db", "current")
        assert gone.returncode == 1
        assert "no `jivapay up` is running" in gone.stderr  # a stale stack file is ignored
    finally:
        if holder.poll() is None:
            holder.kill()


def test_stack_credentials_keep_the_admin_password_and_record_this_runs_ports(
    tmp_path: Path,
) -> None:
    from jivapay.cli import record_stack_credentials, server_urls
    from jivapay.seeds import SeedReport

    path = tmp_path / "demo-credentials.json"
    path.write_text(json.dumps({"logins": [{"email": "m@example.com"}]}))
    first = server_urls("0.0.0.0", {"gateway": 9003, "admin": 9004})
    record_stack_credentials(
        path, report=SeedReport("admin@jivapay.local", "generated-pw"), servers=first
    )
    again = server_urls("127.0.0.1", {"gateway": 8103, "admin": 8104})
    record_stack_credentials(path, report=SeedReport("admin@jivapay.local", None), servers=again)

    data = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert data["admin"] == {"email": "admin@jivapay.local", "password": "generated-pw"}
    assert data["servers"]["gateway"] == "http://127.0.0.1:8103"
    assert data["gateway_url"] == "http://127.0.0.1:8103/gateway"
    assert data["logins"] == [{"email": "m@example.com"}]  # the seed's part is kept


def test_help_shows_plain_flags() -> None:
    result = runner.invoke(app, ["up", "--help"])
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    for option in ("--no-worker", "--no-demo", "--host", "--startup-timeout", "--port-offset"):
        assert option in result.output


def test_sign_prints_the_headers_of_a_get_with_a_query() -> None:
    from jivapay.security import compute_signature

    path = "/gateway/payin/status/ord_123?verbose=1"
    result = runner.invoke(
        app,
        ["sign", "--method", "get", "--path", path, "--public-key", "pk_1"],
        env={"JIVAPAY_PRIVATE_KEY": "sk_secret"},
    )
    assert result.exit_code == 0, result.output
    headers = dict(line.split(": ", 1) for line in result.output.splitlines())
    assert headers["X-API-Key"] == "pk_1"
    expected = compute_signature("sk_secret", headers["X-Timestamp"], "GET", path, b"")
    assert headers["X-Signature"] == expected

    body = '{"a": 1}'
    curl = runner.invoke(
        app,
        ["sign", "--method", "POST", "--path", "/gateway/payin/init", "--body", body, "--curl"],
        env={"JIVAPAY_PUBLIC_KEY": "pk_1", "JIVAPAY_PRIVATE_KEY": "sk_secret"},
    )
    assert curl.exit_code == 0, curl.output
    parts = curl.output.split()
    assert parts[0::2] == ["-H", "-H", "-H"]
    signed = dict(part.split(":", 1) for part in parts[1::2])
    assert signed["X-Signature"] == compute_signature(
        "sk_secret", signed["X-Timestamp"], "POST", "/gateway/payin/init", body.encode()
    )


def test_storage_init_makes_the_bucket_once(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jivapay.config import reset_settings_cache
    from jivapay.utils import s3_client

    bucket = f"jivapay-init-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("S3_BUCKET_NAME", bucket)
    reset_settings_cache()
    try:
        for _ in range(2):  # a second run finds it and changes nothing
            result = runner.invoke(app, ["storage-init"])
            assert result.exit_code == 0, result.output
            assert f"bucket ready: {bucket}" in result.output
        s3_client.get_client().head_bucket(Bucket=bucket)
    finally:
        monkeypatch.undo()
        reset_settings_cache()


def test_worker_metrics_bind_loopback_unless_told_otherwise() -> None:
    # The worker's gauges hold the money in flight: reachable from the network only when asked.
    import inspect

    from jivapay.cli import worker

    option = inspect.signature(worker).parameters["metrics_addr"].default
    assert option.default == "127.0.0.1"
