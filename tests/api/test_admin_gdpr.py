"""GDPR through the admin API: the export bundle (with the money history and the audit rows staff
wrote about the person), anonymising a trader (no column anywhere keeps the old email, names or full
numbers; money history intact and reconciled), refusals with money in flight, a merchant's stores
shut and re-keyed, and a store customer's data removed from closed orders."""

from __future__ import annotations

import secrets
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from jivapay.database.models import (
    AuditLog,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    BalanceTraderFiat,
    BalanceTraderFiatHistory,
    IncomingOrder,
    MerchantStore,
    OrderHistory,
    OwnerOfRequisites,
    ReqTrader,
    Trader,
    User,
)
from jivapay.enums import OrderType, RequisiteStatus, Role
from jivapay.services import balance_manager, gdpr
from jivapay.services import order_status_manager as osm
from jivapay.services.audit_logger import log_event
from jivapay.services.auth_service import record_login_failure
from jivapay.services.order_processor import process_incoming_order
from jivapay.services.reconciliation import reconcile
from tests.api.admin_helpers import admin_client, bearer, make_staff, row_counts
from tests.factories import make_incoming, make_reference, make_requisite, make_store, make_trader

D = Decimal


@pytest.fixture
def client(db):  # type: ignore[no-untyped-def]
    return admin_client()


@pytest.fixture
def dpo(db):  # type: ignore[no-untyped-def]
    """A data-protection admin: export, anonymise and read users, nothing else."""
    return make_staff(db, Role.ADMIN, ["users:export:all", "users:anonymize:all", "users:view:all"])


def _trader_actor(trader: Trader) -> osm.Actor:
    return osm.Actor(osm.ActorKind.TRADER, user_id=trader.user_id, trader_id=trader.id)


def _text_columns(session: Session) -> list[tuple[str, str]]:
    rows = session.execute(
        text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() "
            "AND data_type IN ('text', 'character varying', 'jsonb', 'json')"
        )
    )
    return [(str(table), str(column)) for table, column in rows]


def _where_found(session: Session, needles: list[str]) -> list[str]:
    """Every `table.column` whose text holds one of `needles` (case-insensitive)."""
    found = []
    for table, column in _text_columns(session):
        for needle in needles:
            hit = session.scalar(
                text(
                    f'SELECT count(*) FROM "{table}" '
                    f'WHERE strpos(lower("{column}"::text), lower(:n)) > 0'
                ),
                {"n": needle},
            )
            if hit:
                found.append(f"{table}.{column} holds {needle!r}")
    return found


@pytest.fixture
def trader_world(db, unique):  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    store = make_store(db, ref, balance=D("1000"))
    trader = make_trader(db, ref)
    user = db.get(User, trader.user_id)
    user.email = f"gdpr-{unique}@example.com"
    trader.first_name, trader.last_name = f"Zorro{unique}", f"Quixote{unique}"
    number = "4276" + "".join(secrets.choice("0123456789") for _ in range(12))
    req = make_requisite(db, trader, ref, number=number)
    owner = db.get(OwnerOfRequisites, req.owner_id)
    owner.first_name, owner.last_name = f"Olga{unique}", f"Petrova{unique}"
    db.flush()
    # Personal data the log holds: a failed login names the email; a moderation row the holder.
    record_login_failure(
        db,
        email=user.email,
        role=Role.TRADER,
        reason="wrong_password",
        user_id=user.id,
        ip_address=None,
    )
    log_event(
        db,
        action="requisite.created",
        user_id=user.id,
        target_entity="requisite",
        target_id=req.id,
        details={"holder_first_name": owner.first_name, "holder_last_name": owner.last_name},
    )
    completed = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("500.00")).id)
    db.expire_all()
    osm.transition(
        db,
        event=osm.OrderEvent.CONFIRM,
        public_id=db.get(OrderHistory, completed.order_id).public_id,
        actor=_trader_actor(trader),
    )
    canceled = process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("300.00")).id)
    osm.cancel_order(
        db,
        public_id=db.get(OrderHistory, canceled.order_id).public_id,
        actor=_trader_actor(trader),
        reason="test",
    )
    db.flush()
    needles = [
        user.email,
        trader.first_name,
        trader.last_name,
        owner.first_name,
        owner.last_name,
        number,
    ]
    return ref, store, trader, req, number, needles


def test_export_bundle_holds_everything_with_numbers_masked(client, db, dpo, trader_world) -> None:  # type: ignore[no-untyped-def]
    _, _, trader, _req, number, _ = trader_world
    r = client.get(f"/admin/users/{trader.user_id}/export", headers=bearer(dpo))
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["user"]["id"] == trader.user_id and bundle["user"]["role"] == "trader"
    assert bundle["profile"]["first_name"] == trader.first_name
    assert [x["number_masked"] for x in bundle["requisites"]] == [f"**** {number[-4:]}"]
    assert bundle["owners"][0]["first_name"].startswith("Olga")
    assert {o["status"] for o in bundle["orders"]} == {"completed", "canceled"}
    assert all(isinstance(o["amount_crypto"], str) for o in bundle["orders"])
    assert bundle["balances"][0]["balance"] == "9990.30000000"
    assert any(a["action"] == "requisite.created" for a in bundle["audit_log"])
    assert number not in r.text
    assert client.get("/admin/users/999999999/export", headers=bearer(dpo)).status_code == 404
    # An administrator's data goes out only to someone who may manage administrators.
    root = make_staff(db, Role.ADMIN, ["superuser"])
    r = client.get(f"/admin/users/{root.id}/export", headers=bearer(dpo))
    assert r.status_code == 403 and "users:manage:admin" in r.text, r.text
    senior = make_staff(db, Role.ADMIN, ["users:export:all", "users:manage:admin"])
    assert client.get(f"/admin/users/{root.id}/export", headers=bearer(senior)).status_code == 200


def _history(db: Session, history, account, where) -> set[tuple[int, str, str, str]]:  # type: ignore[no-untyped-def]
    """(id, operation, amount, created_at) of the history rows of the balances `where` selects."""
    rows = db.scalars(select(history).join(account).where(where)).all()
    return {(h.id, h.operation, format(h.amount, "f"), h.created_at.isoformat()) for h in rows}


def _exported(rows: list[dict]) -> set[tuple[int, str, str, str]]:  # type: ignore[type-arg]
    return {(h["id"], h["operation"], h["amount"], h["created_at"]) for h in rows}


def test_export_holds_the_traders_money_history(client, db, dpo, trader_world) -> None:  # type: ignore[no-untyped-def]
    """Every movement of the deposit and the fiat turnover (deposit, holds, payin, a staff
    adjustment with its reason) is data about the trader: amounts as exact strings, times ISO."""
    ref, _, trader, _req, _number, _ = trader_world
    admin = make_staff(db, Role.ADMIN, ["superuser"])
    balance_manager.adjust_balance(
        db,
        account="trader",
        account_id=trader.id,
        crypto_currency_id=ref.crypto.id,
        amount=D("-0.10000000"),
        actor_user_id=admin.id,
        reason="chargeback correction",
    )
    db.flush()
    crypto = _history(
        db, BalanceTraderCryptoHistory, BalanceTrader, BalanceTrader.trader_id == trader.id
    )
    fiat = _history(
        db, BalanceTraderFiatHistory, BalanceTraderFiat, BalanceTraderFiat.trader_id == trader.id
    )
    assert {op for _, op, _, _ in crypto} >= {"deposit", "freeze", "adjustment"} and fiat

    r = client.get(f"/admin/users/{trader.user_id}/export", headers=bearer(dpo))
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert _exported(bundle["balance_history"]) == crypto
    assert _exported(bundle["fiat_turnover_history"]) == fiat
    assert {h["crypto"] for h in bundle["balance_history"]} == {ref.crypto.code}
    assert {h["fiat"] for h in bundle["fiat_turnover_history"]} == {ref.fiat.code}
    (adjustment,) = [h for h in bundle["balance_history"] if h["operation"] == "adjustment"]
    assert adjustment["amount"] == "-0.10000000" and adjustment["reason"] == "chargeback correction"
    assert all(isinstance(h["balance_after"], str) for h in bundle["balance_history"])
    # Newest first, like the audit rows.
    times = [h["created_at"] for h in bundle["balance_history"]]
    assert times == sorted(times, reverse=True)


def test_export_holds_the_audit_rows_staff_wrote_about_the_person(
    client, db, dpo, trader_world
) -> None:  # type: ignore[no-untyped-def]
    """The audit rows about the person (their account, trader profile, requisites, balances),
    written by staff, are theirs as much as the rows they wrote; another trader's rows are not."""
    ref, _, trader, req, _number, _ = trader_world
    admin = make_staff(db, Role.ADMIN, ["superuser"])
    other = make_trader(db, ref)
    about = {
        "user.updated": ("user", trader.user_id),
        "trader.traffic_changed": ("trader", trader.id),
        "requisite.status_changed": ("requisite", req.id),
    }
    for action, (entity, target) in about.items():
        log_event(db, action=action, user_id=admin.id, target_entity=entity, target_id=target)
    log_event(
        db,
        action="trader.settings_changed",
        user_id=admin.id,
        target_entity="trader",
        target_id=other.id,
    )
    balance_manager.deposit_trader_balance(
        db,
        trader_id=trader.id,
        crypto_currency_id=ref.crypto.id,
        amount=D("5"),
        actor_user_id=admin.id,
        reason="top-up",
    )
    db.flush()
    r = client.get(f"/admin/users/{trader.user_id}/export", headers=bearer(dpo))
    assert r.status_code == 200, r.text
    rows = r.json()["audit_log"]
    actions = {a["action"] for a in rows}
    assert {*about, "balance.deposit"} <= actions  # balance.deposit: target balance_trader/<id>
    assert "trader.settings_changed" not in actions
    person_is = {(a["action"], a.get("person_is")) for a in rows}
    assert {(action, "subject") for action in [*about, "balance.deposit"]} <= person_is
    assert ("requisite.created", "actor") in person_is
    assert all("user_id" not in a for a in rows)  # who on the staff wrote a row is not exported


def test_export_holds_a_merchants_store_history_and_store_rows(client, db, dpo) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    world = make_store(db, ref, balance=D("1000"))
    other = make_store(db, ref, balance=D("1000"))
    admin = make_staff(db, Role.ADMIN, ["superuser"])
    for store in (world.store, other.store):
        log_event(
            db,
            action="store.callbacks_disabled",
            user_id=admin.id,
            target_entity="merchant_store",
            target_id=store.id,
        )
    payout = make_incoming(db, world, ref, amount_fiat=D("100.00"), order_type=OrderType.PAYOUT)
    db.flush()
    history = _history(
        db, BalanceStoreHistory, BalanceStore, BalanceStore.store_id == world.store.id
    )
    assert {op for _, op, _, _ in history} == {"deposit", "freeze"} and payout.store_hold

    r = client.get(f"/admin/users/{world.merchant.user_id}/export", headers=bearer(dpo))
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert _exported(bundle["balance_history"]) == history
    assert {(h["store_id"], h["crypto"]) for h in bundle["balance_history"]} == {
        (world.store.id, ref.crypto.code)
    }
    stores = [a for a in bundle["audit_log"] if a["target_entity"] == "merchant_store"]
    assert [(a["target_id"], a["person_is"]) for a in stores] == [(str(world.store.id), "subject")]


def test_export_cuts_the_history_to_its_newest_rows(
    client, db, dpo, trader_world, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    _, _, trader, _req, _number, _ = trader_world
    crypto = _history(
        db, BalanceTraderCryptoHistory, BalanceTrader, BalanceTrader.trader_id == trader.id
    )
    assert len(crypto) > 2
    monkeypatch.setattr(gdpr, "EXPORT_HISTORY_LIMIT", 2)
    r = client.get(f"/admin/users/{trader.user_id}/export", headers=bearer(dpo))
    newest = sorted(crypto, key=lambda h: (h[3], h[0]), reverse=True)[:2]
    assert [(h["id"], h["created_at"]) for h in r.json()["balance_history"]] == [
        (h[0], h[3]) for h in newest
    ]


def test_anonymising_a_trader_leaves_no_trace_and_keeps_the_books(
    client, db, dpo, trader_world
) -> None:  # type: ignore[no-untyped-def]
    _ref, _store, trader, req, number, needles = trader_world
    assert _where_found(db, needles)  # the search does find them before
    balances_before = [
        tuple(r)
        for r in db.execute(text("SELECT id, balance, frozen FROM balance_traders ORDER BY id"))
    ]
    orders_before = db.scalar(text("SELECT count(*) FROM order_history"))

    r = client.post(
        f"/admin/users/{trader.user_id}/anonymize",
        json={"reason": f"erasure request by {needles[0]}"},
        headers=bearer(dpo),
    )
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True
    db.expire_all()
    assert _where_found(db, needles) == []
    user = db.get(User, trader.user_id)
    assert not user.is_active and user.anonymized_at is not None
    assert user.token_version == 1  # no token of the erased user works again, even reactivated
    requisite = db.get(ReqTrader, req.id)
    assert requisite.status == RequisiteStatus.ARCHIVED.value
    assert requisite.req_number == number[-4:] and requisite.req_last4 == number[-4:]
    assert reconcile(db) == []
    assert [
        tuple(r)
        for r in db.execute(text("SELECT id, balance, frozen FROM balance_traders ORDER BY id"))
    ] == balances_before
    assert db.scalar(text("SELECT count(*) FROM order_history")) == orders_before

    r = client.post(
        f"/admin/users/{trader.user_id}/anonymize", json={"reason": "again"}, headers=bearer(dpo)
    )
    assert r.status_code == 200 and r.json()["changed"] is False
    # The anonymised trader cannot be reactivated.
    root = make_staff(db, Role.ADMIN, ["superuser"])
    r = client.post(f"/admin/users/{trader.user_id}/activate", headers=bearer(root))
    assert r.status_code == 409


def test_anonymising_is_refused_with_an_open_order(client, db, dpo, trader_world) -> None:  # type: ignore[no-untyped-def]
    ref, store, trader, _, _, needles = trader_world
    process_incoming_order(make_incoming(db, store, ref, amount_fiat=D("200.00")).id)
    before = row_counts(db)
    r = client.post(
        f"/admin/users/{trader.user_id}/anonymize", json={"reason": "x"}, headers=bearer(dpo)
    )
    assert r.status_code == 409 and r.json()["code"] == "open_orders"
    assert row_counts(db) == before
    db.expire_all()
    assert db.get(User, trader.user_id).email == needles[0]
    assert (
        client.post(
            f"/admin/users/{trader.user_id}/anonymize", json={}, headers=bearer(dpo)
        ).status_code
        == 422
    )


def test_anonymising_a_merchant_shuts_and_rekeys_its_stores(client, db, dpo, unique) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    world = make_store(db, ref, balance=D("1000"))
    merchant_user = world.merchant.user_id
    # A staff row about one of its stores names the company: the merchant's data, scrubbed too.
    world.merchant.company_name = f"Acme{unique}"
    about_store = log_event(
        db,
        action="store.callbacks_disabled",
        user_id=make_staff(db, Role.ADMIN, ["superuser"]).id,
        target_entity="merchant_store",
        target_id=world.store.id,
        details={"company": world.merchant.company_name},
    )
    payout = make_incoming(db, world, ref, amount_fiat=D("100.00"), order_type=OrderType.PAYOUT)
    path = f"/admin/users/{merchant_user}/anonymize"
    r = client.post(path, json={"reason": "x"}, headers=bearer(dpo))
    assert r.status_code == 409 and r.json()["code"] == "open_orders"
    payout.status = "failed"
    db.flush()
    r = client.post(path, json={"reason": "x"}, headers=bearer(dpo))
    assert r.status_code == 409 and r.json()["code"] == "frozen_money"
    balance_manager.release_store_hold(
        db,
        store_id=world.store.id,
        crypto_currency_id=ref.crypto.id,
        amount=payout.store_hold,
        incoming_order_id=payout.id,
        order_id=None,
    )
    old_public = world.store.public_api_key
    r = client.post(path, json={"reason": "x"}, headers=bearer(dpo))
    assert r.status_code == 200, r.text
    db.expire_all()
    store = db.get(MerchantStore, world.store.id)
    assert store.public_api_key != old_public and not store.access and not store.trafic_access
    assert store.callback_url is None
    assert db.get(AuditLog, about_store.id).details == {"company": "[anonymized]"}
    assert reconcile(db) == []


def test_customer_anonymisation_on_closed_orders(client, db, dpo, unique) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("50"))
    store = make_store(db, ref, balance=D("1000"))
    trader = make_trader(db, ref)
    make_requisite(db, trader, ref)
    customer = f"cust-{unique}"
    ids = []
    for amount in (D("100.00"), D("150.00")):
        incoming = make_incoming(db, store, ref, amount_fiat=amount)
        incoming.customer_id, incoming.customer_ip = customer, "203.0.113.77"
        db.flush()
        ids.append(process_incoming_order(incoming.id).order_id)
    body = {"store_id": store.store.id, "customer_id": customer}
    r = client.post("/admin/customers/anonymize", json=body, headers=bearer(dpo))
    assert r.status_code == 409 and r.json()["code"] == "open_orders"
    for order_id in ids:
        osm.transition(
            db,
            event=osm.OrderEvent.CONFIRM,
            public_id=db.get(OrderHistory, order_id).public_id,
            actor=_trader_actor(trader),
        )
    r = client.post("/admin/customers/anonymize", json=body, headers=bearer(dpo))
    assert r.status_code == 200 and r.json() == {
        "store_id": store.store.id,
        "orders": 2,
        "changed": True,
    }
    db.expire_all()
    assert _where_found(db, [customer, "203.0.113.77"]) == []
    assert reconcile(db) == []
    r = client.post("/admin/customers/anonymize", json=body, headers=bearer(dpo))
    assert r.json()["changed"] is False
    r = client.post(
        "/admin/customers/anonymize",
        json={"store_id": 999999999, "customer_id": "x"},
        headers=bearer(dpo),
    )
    assert r.status_code == 404
    rows = db.scalars(select(IncomingOrder).where(IncomingOrder.store_id == store.store.id)).all()
    assert {o.customer_id for o in rows} != {customer} and all(o.customer_ip is None for o in rows)
