"""The Alembic migrations build exactly the models' schema, and can be undone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from jivapay.database.migrate import downgrade, upgrade
from jivapay.database.models import Base


@pytest.fixture
def empty_database_url(services: dict[str, str]) -> Iterator[str]:
    base = make_url(services["database_url"])
    name = f"jivapay_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_upgrade_head_matches_models_and_downgrade_base_empties(empty_database_url: str) -> None:
    upgrade("head", url=empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
            tables = set(inspect(conn).get_table_names())
        assert diff == [], f"models and migrations differ: {diff}"
        assert set(Base.metadata.tables) <= tables

        downgrade("base", url=empty_database_url)
        with engine.connect() as conn:
            left = set(inspect(conn).get_table_names()) - {"alembic_version"}
        assert left == set()

        # And back up again: the chain is repeatable.
        upgrade("head", url=empty_database_url)
        with engine.connect() as conn:
            assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_constraint_names_follow_the_convention(db) -> None:  # type: ignore[no-untyped-def]
    rows = db.execute(
        text(
            "SELECT conname, contype FROM pg_constraint c JOIN pg_namespace n "
            "ON n.oid = c.connamespace WHERE n.nspname = 'public'"
        )
    ).all()
    prefixes = {"p": "pk_", "u": "uq_", "c": "ck_", "f": "fk_"}
    wrong = [
        name
        for name, kind in rows
        if kind in prefixes
        and not name.startswith(prefixes[kind])
        and name != "alembic_version_pkc"
    ]
    assert rows and wrong == []
