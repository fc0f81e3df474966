"""Rotating DATA_ENCRYPTION_KEY: old values stay readable, `jivapay rotate-encryption-key` moves
every stored secret to the newest key in batches, is idempotent, and leaves locked rows for a re-run."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from jivapay.cli import app
from jivapay.config import get_settings
from jivapay.database.engine import get_engine
from jivapay.database.models import IncomingOrder, MerchantStore, ReqTrader
from jivapay.database.types import fingerprint
from jivapay.enums import OrderType
from jivapay.services.key_rotation import encrypted_columns
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

runner = CliRunner()
COLUMNS = {
    "incoming_orders.beneficiary_number",
    "merchant_stores.callback_secret",
    "merchant_stores.private_api_key",
    "req_traders.req_number",
}


def _raw_tokens(session: Session) -> dict[str, list[str]]:
    found = {}
    for column in encrypted_columns():
        name = f"{column.table.name}.{column.name}"
        found[name] = list(
            session.execute(
                text(
                    f'SELECT "{column.name}" FROM "{column.table.name}" WHERE "{column.name}" IS NOT NULL'
                )
            ).scalars()
        )
    return found


def _counts(output: str) -> dict[str, tuple[int, int, int, int]]:
    rows = re.findall(
        r"^(\S+): (\d+) re-encrypted, (\d+) already on the newest key, (\d+) busy, (\d+) unreadable$",
        output,
        re.MULTILINE,
    )
    return {name: tuple(int(n) for n in counts) for name, *counts in rows}  # type: ignore[misc]


def _rotate_to(monkeypatch: pytest.MonkeyPatch, keys: str, fingerprint_key: str | None) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "DATA_ENCRYPTION_KEY", keys)
    monkeypatch.setattr(settings, "DATA_FINGERPRINT_KEY", fingerprint_key)


def test_every_encrypted_column_is_walked() -> None:
    assert {f"{c.table.name}.{c.name}" for c in encrypted_columns()} == COLUMNS


def test_old_values_read_during_rotation_and_none_needs_the_old_key_after(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = get_settings().DATA_ENCRYPTION_KEY
    ref = make_reference(db)
    worlds = [make_store(db, ref, balance=Decimal("100000")) for _ in range(3)]
    secrets = {w.store.id: (w.private_key, w.store.callback_secret) for w in worlds}
    trader = make_trader(db, ref)
    reqs = {r.id: r.req_number for r in (make_requisite(db, trader, ref) for _ in range(3))}
    payout = make_incoming(db, worlds[0], ref, order_type=OrderType.PAYOUT)
    db.commit()
    hashes_before = {
        r.id: r.req_number_hash for r in db.query(ReqTrader).filter(ReqTrader.id.in_(reqs))
    }
    stamps = """SELECT 's' || id, updated_at FROM merchant_stores
        UNION ALL SELECT 'r' || id, updated_at FROM req_traders
        UNION ALL SELECT 'i' || id, updated_at FROM incoming_orders"""
    updated_before = dict(db.execute(text(stamps)).tuples().all())

    new = Fernet.generate_key().decode()
    _rotate_to(monkeypatch, f"{new},{old}", old)
    db.expire_all()
    # Step 1 deployed: everything written with the old key still reads, and number hashes (the
    # duplicate check, card blocklists) are unchanged because their key is pinned.
    for store_id, (private_key, callback_secret) in secrets.items():
        store = db.get(MerchantStore, store_id)
        assert store is not None
        assert (store.private_api_key, store.callback_secret) == (private_key, callback_secret)
    for req_id, number in reqs.items():
        req = db.get(ReqTrader, req_id)
        assert req is not None and req.req_number == number
        assert fingerprint(number) == req.req_number_hash == hashes_before[req_id]
    assert db.get(IncomingOrder, payout.id).beneficiary_number == "4111111111111111"  # type: ignore[union-attr]
    # New writes use the newest key already.
    fresh = make_store(db, ref)
    db.commit()
    fresh_token = db.execute(
        text("SELECT callback_secret FROM merchant_stores WHERE id = :i"), {"i": fresh.store.id}
    ).scalar_one()
    assert (
        Fernet(new.encode()).decrypt(fresh_token.encode()).decode() == fresh.store.callback_secret
    )

    result = runner.invoke(app, ["rotate-encryption-key", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    counts = _counts(result.output)
    assert set(counts) == COLUMNS
    # 3 + 1 stores, 3 requisites, 1 PayOut; the fresh store's two secrets were current already.
    assert counts["merchant_stores.private_api_key"] == (3, 1, 0, 0)
    assert counts["merchant_stores.callback_secret"] == (3, 1, 0, 0)
    assert counts["req_traders.req_number"] == (3, 0, 0, 0)
    assert counts["incoming_orders.beneficiary_number"] == (1, 0, 0, 0)
    assert "total: 10 re-encrypted" in result.output
    # Re-encryption is maintenance: no row reads as changed by it.
    updated_after = dict(db.execute(text(stamps)).tuples().all())
    assert {k: updated_after[k] for k in updated_before} == updated_before

    tokens = _raw_tokens(db)
    assert sum(len(v) for v in tokens.values()) == 12
    for values in tokens.values():
        for token in values:
            with pytest.raises(InvalidToken):
                Fernet(old.encode()).decrypt(token.encode())
            Fernet(new.encode()).decrypt(token.encode())

    # Step 3: the old key is gone; everything still reads.
    _rotate_to(monkeypatch, new, old)
    db.expire_all()
    for store_id, (private_key, _) in secrets.items():
        assert db.get(MerchantStore, store_id).private_api_key == private_key  # type: ignore[union-attr]
    for req_id, number in reqs.items():
        assert db.get(ReqTrader, req_id).req_number == number  # type: ignore[union-attr]
        assert fingerprint(number) == hashes_before[req_id]

    again = runner.invoke(app, ["rotate-encryption-key"])
    assert again.exit_code == 0, again.output
    assert all(c[0] == 0 for c in _counts(again.output).values())
    assert "total: 0 re-encrypted" in again.output
    assert _raw_tokens(db) == tokens  # the second pass wrote nothing


def test_a_value_no_key_reads_fails_the_command_without_stopping_it(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = get_settings().DATA_ENCRYPTION_KEY
    ref = make_reference(db)
    a, b = make_store(db, ref), make_store(db, ref)
    stranger = Fernet(Fernet.generate_key()).encrypt(b"whsec_foreign").decode()
    db.execute(
        text("UPDATE merchant_stores SET callback_secret = :t WHERE id = :i"),
        {"t": stranger, "i": a.store.id},
    )
    db.commit()
    new = Fernet.generate_key().decode()
    _rotate_to(monkeypatch, f"{new},{old}", old)

    result = runner.invoke(app, ["rotate-encryption-key"])
    assert result.exit_code == 1
    assert _counts(result.output)["merchant_stores.callback_secret"] == (1, 0, 0, 1)
    assert "1 values no configured key decrypts" in result.output
    token = db.execute(
        text("SELECT callback_secret FROM merchant_stores WHERE id = :i"), {"i": b.store.id}
    ).scalar_one()
    Fernet(new.encode()).decrypt(token.encode())  # the readable row was still rotated


def test_a_row_a_request_holds_is_skipped_and_a_rerun_finishes(
    committed_db, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    old = get_settings().DATA_ENCRYPTION_KEY
    with committed_db() as session:
        ref = make_reference(session)
        held, free = make_store(session, ref), make_store(session, ref)
        session.commit()
        held_id, free_id = held.store.id, free.store.id
    new = Fernet.generate_key().decode()
    _rotate_to(monkeypatch, f"{new},{old}", old)

    with get_engine().connect() as other:
        other.execute(
            text("SELECT 1 FROM merchant_stores WHERE id = :i FOR UPDATE"), {"i": held_id}
        )
        busy = runner.invoke(app, ["rotate-encryption-key"])
        other.rollback()
    assert busy.exit_code == 1
    assert _counts(busy.output)["merchant_stores.private_api_key"] == (1, 0, 1, 0)
    assert "run the command again" in busy.output

    again = runner.invoke(app, ["rotate-encryption-key"])
    assert again.exit_code == 0, again.output
    assert _counts(again.output)["merchant_stores.private_api_key"] == (1, 1, 0, 0)
    with committed_db() as session:
        for store_id in (held_id, free_id):
            token = session.execute(
                text("SELECT private_api_key FROM merchant_stores WHERE id = :i"), {"i": store_id}
            ).scalar_one()
            with pytest.raises(InvalidToken):
                Fernet(old.encode()).decrypt(token.encode())
