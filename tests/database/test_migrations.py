"""The Alembic migrations build exactly the models' schema, and can be undone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

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


_ORDER = """
INSERT INTO order_history (public_id, incoming_order_id, store_id, merchant_id, trader_id,
    requisite_id, payment_method_id, bank_id, fiat_currency_id, crypto_currency_id, order_type,
    amount_fiat, amount_crypto, exchange_rate, store_commission_rate, trader_commission_rate,
    store_commission, trader_commission, platform_profit, hold_amount, turnover_bucket,
    turnover_day, status, expires_at, completed_at, disputed_at, created_at, updated_at)
SELECT :pid, :n, 7, 3, 5, 1, 1, 1, 1, 1, 'payin', fiat, fiat / 100, 100, 5, 3,
    fiat / 100 * 0.05, fiat / 100 * 0.03, fiat / 100 * 0.02, fiat / 100, at, at::date, :status,
    at, done, disputed, at, at
FROM (SELECT CAST(:at AS timestamptz) AS at, CAST(:fiat AS numeric) AS fiat,
             CAST(:done AS timestamptz) AS done, CAST(:disputed AS timestamptz) AS disputed) v
"""


def test_the_rollup_migration_backfills_existing_orders(empty_database_url: str) -> None:
    from sqlalchemy.orm import Session

    from jivapay.services import order_stats_rollup

    upgrade("0008_staff_idempotency_keys", url=empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            # Orders without their store, trader and reference rows: foreign keys are triggers.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            for n, (at, status, done, disputed) in enumerate(
                [
                    ("2026-01-31T23:59:59.5+00", "completed", "2026-02-01T00:10:00.25+00", None),
                    ("2026-01-05T10:00:00+00", "completed", "2026-01-05T10:01:40+00", None),
                    ("2026-02-01T00:00:00+00", "canceled", None, "2026-02-01T00:05:00+00"),
                ],
                start=1,
            ):
                conn.execute(
                    text(_ORDER),
                    {
                        "pid": f"o{n}",
                        "n": n,
                        "fiat": 100 * n,
                        "at": at,
                        "status": status,
                        "done": done,
                        "disputed": disputed,
                    },
                )
        upgrade("head", url=empty_database_url)
        with Session(engine) as session:
            assert order_stats_rollup.drift(session) == []
            january = session.execute(
                text(
                    "SELECT orders, amount_fiat, completion_seconds FROM order_stats_store "
                    "WHERE grain = 'month' AND period_start = '2026-01-01' AND status = 'completed'"
                )
            ).one()
            # 600.75 s and 100 s; the order created a half second before February counts in January.
            assert tuple(january) == (2, Decimal("300.00"), Decimal("700.750000"))
            february = session.execute(
                text(
                    "SELECT status, orders, disputes FROM order_stats_trader "
                    "WHERE grain = 'day' AND period_start = '2026-02-01'"
                )
            ).all()
            assert [tuple(r) for r in february] == [("canceled", 1, 1)]
    finally:
        engine.dispose()


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


# --------------------------------------------------------------------------- one number, one trader

_NUMBER_REVISION = "0013_requisite_number_unique"
_REQUISITE = """
INSERT INTO req_traders (id, trader_id, owner_id, fiat_currency_id, payment_method_id, bank_id,
    req_number, req_last4, req_number_hash, status)
VALUES (:id, :trader, 1, 1, 1, 1, 'ciphertext', '1234', :hash, :status)
"""


def _number_migration():  # type: ignore[no-untyped-def]
    from alembic.script import ScriptDirectory

    from jivapay.database.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config()).get_revision(_NUMBER_REVISION)
    assert script is not None
    return script.module


def _req_indexes(url: str) -> dict[str, bool]:
    """The unique number indexes of `req_traders`, each with whether it is valid."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.relname, i.indisvalid FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE i.indrelid = 'req_traders'::regclass AND c.relname LIKE 'uq_%'"
                )
            ).all()
            return {name: valid for name, valid in rows}
    finally:
        engine.dispose()


def test_the_number_migration_stops_on_shared_numbers_and_says_how_to_resolve(
    empty_database_url: str,
) -> None:
    """Requisites that share a number (possible under the per-trader index) stop the upgrade
    before anything changes, with the count, the ids and what to do; once all but one of each are
    archived it goes through, and downgrading brings the per-trader index back."""
    migration = _number_migration()
    upgrade("0012_token_version", url=empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            # Requisites without their trader and reference rows: foreign keys are triggers.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            for id_, trader, hash_, status in [
                (1, 1, "h1", "approved"),
                (2, 2, "h1", "pending_review"),  # trader 2 holds trader 1's number
                (3, 3, "h1", "archived"),  # archived: holds nothing
                (4, 1, "h2", "approved"),
                (5, 2, "h2", "blocked"),  # blocked still holds it
                (6, 3, "h3", "approved"),
            ]:
                conn.execute(
                    text(_REQUISITE), {"id": id_, "trader": trader, "hash": hash_, "status": status}
                )
        with engine.connect() as conn:
            assert migration.shared_numbers(conn) == [[1, 2], [4, 5]]
            with pytest.raises(migration.SharedRequisiteNumbers):
                migration.check_no_shared_numbers(conn)

        # (Alembic loads its own copy of the module: the class is matched by name.)
        with pytest.raises(RuntimeError) as refused:
            upgrade("head", url=empty_database_url)
        assert type(refused.value).__name__ == "SharedRequisiteNumbers"
        message = str(refused.value)
        assert message.startswith("2 requisite number(s) are held by more than one requisite")
        assert "Requisite ids sharing a number: 1, 2; 4, 5." in message
        assert "Archive all but one requisite of each number" in message
        # Nothing changed: still at 0012, still with the per-trader index only.
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == (
                "0012_token_version"
            )
        assert _req_indexes(empty_database_url) == {"uq_req_traders_trader_number": True}

        # A build that failed half way (here by hand, as a shared number written while it ran
        # would) leaves an invalid index; the next upgrade must replace it, not keep it.
        with (
            engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
            pytest.raises(IntegrityError, match="uq_req_traders_number"),
        ):
            conn.execute(
                text(
                    "CREATE UNIQUE INDEX CONCURRENTLY uq_req_traders_number "
                    "ON req_traders (req_number_hash) WHERE status <> 'archived'"
                )
            )
        assert _req_indexes(empty_database_url)["uq_req_traders_number"] is False

        with engine.begin() as conn:
            conn.execute(text("UPDATE req_traders SET status = 'archived' WHERE id IN (2, 5)"))
        upgrade("head", url=empty_database_url)
        assert _req_indexes(empty_database_url) == {"uq_req_traders_number": True}
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            with pytest.raises(IntegrityError, match="uq_req_traders_number"):
                conn.execute(
                    text(_REQUISITE), {"id": 7, "trader": 4, "hash": "h3", "status": "blocked"}
                )

        downgrade("0012_token_version", url=empty_database_url)
        assert _req_indexes(empty_database_url) == {"uq_req_traders_trader_number": True}
    finally:
        engine.dispose()
