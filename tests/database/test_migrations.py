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


# --------------------------------------------------------------------------- expand/contract check
#
# A rolling deploy runs the previous release against the new schema. At every release the models
# equal the schema at head (the test above), so the previous release's models are the schema before
# the new migrations: upgrading one revision at a time and diffing the reflected schema finds, for
# each migration, what the code of the release before it could no longer use. Dropped or renamed
# tables and columns, a new NOT NULL column without a server default on an existing table (old
# inserts omit it), and an existing column tightened to NOT NULL (old code may write NULL) must each
# be declared in that migration's module-level `contract = {"<change>": "<why it is safe now>"}`:
# the contract step of expand/contract, written down with its justification.


def _reflect(url: str) -> dict[str, dict[str, dict[str, object]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            return {
                table: {col["name"]: col for col in insp.get_columns(table)}
                for table in insp.get_table_names()
                if table != "alembic_version"
            }
    finally:
        engine.dispose()


def breaking_changes(
    before: dict[str, dict[str, dict[str, object]]], after: dict[str, dict[str, dict[str, object]]]
) -> set[str]:
    """What in `after` breaks code written for `before` (see the comment above)."""
    found = set()
    for table, columns in before.items():
        if table not in after:
            found.add(f"drop table {table}")
            continue
        for name, column in after[table].items():
            old = columns.get(name)
            required = not column["nullable"] and column.get("default") is None
            if old is None and required and column.get("autoincrement") is not True:
                found.add(f"new required column {table}.{name}")
            elif old is not None and old["nullable"] and not column["nullable"]:
                found.add(f"not null {table}.{name}")
        found |= {f"drop column {table}.{name}" for name in columns.keys() - after[table].keys()}
    return found


def test_breaking_changes_are_found_in_a_small_schema() -> None:
    def col(nullable: bool, default: str | None = None) -> dict[str, object]:
        return {"nullable": nullable, "default": default}

    before = {"a": {"id": col(False), "x": col(True), "y": col(True)}, "gone": {"id": col(False)}}
    after = {
        "a": {
            "id": col(False),
            "x": col(False),  # tightened
            "z": col(False),  # new, required
            "w": col(False, "0"),  # new with a default: fine
            "v": col(True),  # new nullable: fine
        },
        "new": {"id": col(False), "q": col(False)},  # a new table: no old code uses it
    }
    assert breaking_changes(before, after) == {
        "drop table gone",
        "drop column a.y",
        "not null a.x",
        "new required column a.z",
    }


def test_no_migration_breaks_the_previous_release_unless_its_contract_says_why(
    empty_database_url: str,
) -> None:
    from alembic.script import ScriptDirectory

    from jivapay.database.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config())
    chain = list(reversed(list(scripts.walk_revisions("base", "heads"))))
    assert len(chain) >= 8 and chain[-1].revision in scripts.get_heads()
    before = _reflect(empty_database_url)
    problems = []
    for script in chain:
        upgrade(script.revision, url=empty_database_url)
        after = _reflect(empty_database_url)
        found = breaking_changes(before, after)
        declared: dict[str, str] = getattr(script.module, "contract", {})
        for change in sorted(found - declared.keys()):
            problems.append(f"{script.revision}: {change} is not in its `contract`")
        for change in sorted(declared.keys() - found):
            problems.append(f"{script.revision}: contract entry {change!r} matches no change")
        for change, why in declared.items():
            if len(why.strip()) < 20:
                problems.append(f"{script.revision}: contract entry {change!r} needs a reason")
        before = after
    assert problems == []
