"""The `jivapay` CLI in-process (Typer's CliRunner) against the test database.

Commands open their own transaction with `atomic_transaction`; under the `db` fixture that session is
bound to the test's connection, so what they commit is rolled back after the test.
"""

from __future__ import annotations

import json
import stat
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

    result = runner.invoke(app, ["db", "downgrade", "base"])
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


def test_create_user_with_password(db: Session, unique: str) -> None:
    email = f"cli-{unique}@example.com"
    result = runner.invoke(
        app,
        ["create-user", "--email", email, "--role", "trader", "--password", "s3cret-pass"],
    )
    assert result.exit_code == 0, result.output
    assert "created trader" in result.output
    user = db.scalars(select(User).where(User.email == email)).one()
    assert user.role == "trader"
    assert user.password_hash != "s3cret-pass"


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
    assert runner.invoke(app, [*args, "--password", "pw-123456"]).exit_code == 0
    result = runner.invoke(app, [*args, "--password", "pw-123456"])
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
