"""Secrets at rest: Fernet-encrypted columns, last-4 helpers, key rotation."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy import text

from jivapay.config import get_settings
from jivapay.database import types
from jivapay.database.models import (
    Bank,
    FiatCurrency,
    Merchant,
    OwnerOfRequisites,
    PaymentMethod,
    ReqTrader,
    RoleModel,
    Trader,
    User,
)
from jivapay.database.types import decrypt_value, encrypt_value, last4, mask_number
from jivapay.security import hash_password


def _trader(db, unique: str) -> Trader:  # type: ignore[no-untyped-def]
    if db.query(RoleModel).filter_by(name="trader").first() is None:
        db.add(RoleModel(name="trader"))
        db.flush()
    user = User(email=f"t{unique}@x.test", password_hash=hash_password("pw-123456"), role="trader")
    db.add(user)
    db.flush()
    trader = Trader(user_id=user.id)
    db.add(trader)
    db.flush()
    return trader


def test_requisite_number_is_ciphertext_in_the_database(db, unique) -> None:  # type: ignore[no-untyped-def]
    trader = _trader(db, unique)
    owner = OwnerOfRequisites(trader_id=trader.id, first_name="Ivan", last_name="Petrov")
    fiat = FiatCurrency(code=f"F{unique[:6]}", name="fiat")
    bank = Bank(code=f"b{unique}", name="bank")
    method = PaymentMethod(code=f"m{unique}", name="card")
    db.add_all([owner, fiat, bank, method])
    db.flush()
    number = "4276380012345678"
    req = ReqTrader(
        trader_id=trader.id,
        owner_id=owner.id,
        fiat_currency_id=fiat.id,
        payment_method_id=method.id,
        bank_id=bank.id,
        req_number=number,
        req_last4=last4(number),
    )
    db.add(req)
    db.flush()
    raw = db.execute(
        text("SELECT req_number, req_last4 FROM req_traders WHERE id = :i"), {"i": req.id}
    ).one()
    assert number not in raw[0] and "5678" not in raw[0]
    assert raw[1] == "5678"
    db.expire_all()
    assert db.get(ReqTrader, req.id).req_number == number  # type: ignore[union-attr]


def test_encryption_round_trip_and_nondeterminism() -> None:
    a, b = encrypt_value("sk_secret"), encrypt_value("sk_secret")
    assert a != b
    assert decrypt_value(a) == decrypt_value(b) == "sk_secret"


def test_key_rotation_decrypts_old_values(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    old = encrypt_value("card-1111")
    new_key = Fernet.generate_key().decode()
    monkeypatch.setattr(
        get_settings(), "DATA_ENCRYPTION_KEY", f"{new_key},{get_settings().DATA_ENCRYPTION_KEY}"
    )
    types._fernet.cache_clear()
    try:
        assert decrypt_value(old) == "card-1111"
        fresh = encrypt_value("card-2222")
        assert Fernet(new_key.encode()).decrypt(fresh.encode()) == b"card-2222"
    finally:
        types._fernet.cache_clear()


def test_last4_and_mask() -> None:
    assert last4("4276 3800 1234 5678") == "5678"
    assert last4("KZ12-3456") == "3456"
    assert mask_number("5678") == "**** 5678"
    assert mask_number(None) is None
    _ = Merchant  # imported for the mapper registry
