"""Admin user management over HTTP: creating every role with its profile, refusals that write nothing,
grants without escalation, (de)activation stopping tokens at once, the last superuser kept, password
resets and the own-password route of each role server."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jivapay.database.models import AuditLog, TeamLead, Trader, TraderCommission, User
from jivapay.enums import Role
from jivapay.permissions import ROLE_TEMPLATES
from jivapay.security import create_access_token
from jivapay.servers.app_factory import build_app
from tests.api.admin_helpers import admin_client, bearer, make_staff, row_counts
from tests.factories import make_user


@pytest.fixture
def client(db) -> TestClient:  # type: ignore[no-untyped-def]
    return admin_client()


@pytest.fixture
def superadmin(db):  # type: ignore[no-untyped-def]
    return make_staff(db, Role.ADMIN, ["superuser"])


def _create(client: TestClient, actor: User, **body: object):  # type: ignore[no-untyped-def]
    return client.post("/admin/users", json=body, headers=bearer(actor))


def test_creates_every_role_with_its_profile_and_audits(client, db, superadmin, unique) -> None:  # type: ignore[no-untyped-def]
    r = _create(
        client,
        superadmin,
        email=f"TL-{unique}@Example.com",
        password="teamlead-pass-1",
        role="teamlead",
        template="teamlead",
        first_name="Tess",
    )
    assert r.status_code == 201, r.text
    teamlead = r.json()
    assert teamlead["email"] == f"tl-{unique}@example.com"
    assert teamlead["permissions"] == list(ROLE_TEMPLATES["teamlead"])
    r = _create(
        client,
        superadmin,
        email=f"trader-{unique}@example.com",
        password="trader-pass-1",
        role="trader",
        first_name="Tom",
        team_lead_id=teamlead["profile_id"],
        pay_out=False,
        commission={"payin_percent": "2.5", "payout_percent": "1"},
    )
    assert r.status_code == 201, r.text
    trader = r.json()
    assert trader["profile"]["team_lead_id"] == teamlead["profile_id"]
    assert trader["profile"]["pay_out"] is False
    assert trader["profile"]["commission"] == {
        "payin_percent": "2.5000",
        "payout_percent": "1.0000",
    }
    row = db.scalars(
        select(TraderCommission).join(Trader).where(Trader.user_id == trader["id"])
    ).one()
    assert row.commission_payin == Decimal("2.5")
    r = _create(
        client,
        superadmin,
        email=f"m-{unique}@example.com",
        password="merchant-pass-1",
        role="merchant",
        company_name="Shop Ltd",
    )
    assert r.status_code == 201 and r.json()["profile"]["company_name"] == "Shop Ltd"
    r = _create(
        client,
        superadmin,
        email=f"s-{unique}@example.com",
        password="support-pass-1",
        role="support",
        permissions=["orders:view:all", "orders:view:all", "disputes:*"],
        role_description="night shift",
    )
    assert r.status_code == 201
    assert r.json()["permissions"] == ["orders:view:all", "disputes:*"]  # de-duplicated
    created = db.scalars(
        select(AuditLog).where(AuditLog.action == "user.created", AuditLog.user_id == superadmin.id)
    ).all()
    assert len(created) == 4
    assert all(f"{unique}" not in str(a.details) for a in created)  # no email in the log

    # The new merchant can sign in on its own server.
    merchant = build_app(Role.MERCHANT)
    r = TestClient(merchant).post(
        "/merchant/auth/token",
        data={"username": f"m-{unique}@example.com", "password": "merchant-pass-1"},
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "not-an-email", "password": "long-enough-1", "role": "merchant"}, 422, None),
        ({"email": "a@b.co", "password": "short", "role": "merchant"}, 422, None),
        ({"email": "a@b.co", "password": "x" * 1025, "role": "merchant"}, 422, None),
        ({"email": "a@b.co", "password": "long-enough-1", "role": "boss"}, 422, None),
        ({"email": "a@b.co", "password": "long-enough-1", "role": "merchant", "x": 1}, 422, None),
        (
            {
                "email": "a@b.co",
                "password": "long-enough-1",
                "role": "merchant",
                "template": "teamlead",
            },
            422,
            "validation_failed",
        ),
        (
            {
                "email": "a@b.co",
                "password": "long-enough-1",
                "role": "support",
                "permissions": ["BAD"],
            },
            422,
            "validation_failed",
        ),
        (
            {"email": "a@b.co", "password": "long-enough-1", "role": "support", "template": "nope"},
            422,
            "validation_failed",
        ),
        (
            {
                "email": "a@b.co",
                "password": "long-enough-1",
                "role": "trader",
                "team_lead_id": 999999,
            },
            422,
            "validation_failed",
        ),
    ],
)
def test_bad_input_is_422_problem_and_writes_nothing(
    client, db, superadmin, body, status, code
) -> None:  # type: ignore[no-untyped-def]
    before = row_counts(db)
    r = _create(client, superadmin, **body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    if code:
        assert r.json()["code"] == code
    assert row_counts(db) == before


def test_duplicate_email_is_409_case_insensitively(client, db, superadmin, unique) -> None:  # type: ignore[no-untyped-def]
    body = {"email": f"dup-{unique}@example.com", "password": "long-enough-1", "role": "merchant"}
    assert _create(client, superadmin, **body).status_code == 201
    before = row_counts(db)
    r = _create(client, superadmin, **{**body, "email": f"DUP-{unique}@example.com"})
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    assert row_counts(db) == before


def test_no_escalation_when_creating_or_granting(client, db, unique) -> None:  # type: ignore[no-untyped-def]
    admin = make_staff(db, Role.ADMIN, ROLE_TEMPLATES["admin_full"])
    before = row_counts(db)
    # admin_full may create supports, but not with grants it lacks, and never admins.
    r = _create(
        client,
        admin,
        email=f"s-{unique}@example.com",
        password="long-enough-1",
        role="support",
        permissions=["orders:view:all", "superuser"],
    )
    assert r.status_code == 403 and "superuser" in r.json()["detail"]
    r = _create(
        client, admin, email=f"a-{unique}@example.com", password="long-enough-1", role="admin"
    )
    assert r.status_code == 403
    assert row_counts(db) == before
    support = make_staff(db, Role.SUPPORT, ["orders:view:all"])
    r = client.put(
        f"/admin/users/{support.id}/permissions",
        json={"permissions": ["users:manage:admin"]},
        headers=bearer(admin),
    )
    assert r.status_code == 403
    r = client.put(
        f"/admin/users/{support.id}/permissions",
        json={"permissions": ["orders:*", "orders:view:all", "orders:*"]},
        headers=bearer(admin),
    )
    assert r.status_code == 200 and r.json()["permissions"] == ["orders:*", "orders:view:all"]
    r = client.get(f"/admin/users/{support.id}/permissions", headers=bearer(admin))
    assert r.json()["permissions"] == ["orders:*", "orders:view:all"]
    audit = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "permissions.updated", AuditLog.target_id == str(support.id)
        )
    ).one()
    assert audit.details["added"] == ["orders:*"]


def test_no_takeover_of_a_user_who_holds_more(client, db, unique) -> None:  # type: ignore[no-untyped-def]
    """Resetting a password, deactivating, editing, regranting or erasing a user who holds a
    grant the actor lacks would reach that grant (a reset is a login as them; an erasure ends
    them): 403, nothing written."""
    root = make_staff(db, Role.ADMIN, ["superuser"])
    make_staff(db, Role.ADMIN, ["superuser"])  # root is not the last superuser
    lesser = make_staff(
        db,
        Role.ADMIN,
        ["users:manage:admin", "users:view:all", "users:deactivate:all", "users:anonymize:all"],
    )
    peer = make_staff(db, Role.ADMIN, ["users:view:all"])
    old_hash = root.password_hash
    db.flush()
    before = row_counts(db)
    for method, path, body in (
        ("post", f"/admin/users/{root.id}/password", {"new_password": "taken-over-123"}),
        ("post", f"/admin/users/{root.id}/deactivate", None),
        ("patch", f"/admin/users/{root.id}", {"first_name": "Mallory"}),
        ("put", f"/admin/users/{root.id}/permissions", {"permissions": ["users:view:all"]}),
        ("post", f"/admin/users/{root.id}/anonymize", {"reason": "erasure request"}),
    ):
        r = client.request(method, path, json=body, headers=bearer(lesser))
        assert r.status_code == 403, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["permissions"] == ["superuser"], r.text
    assert row_counts(db) == before
    db.expire_all()
    assert db.get(User, root.id).password_hash == old_hash
    assert db.get(User, root.id).is_active and db.get(User, root.id).anonymized_at is None
    # A data-protection admin erasing a support who holds more: refused the same way.
    dpo = make_staff(db, Role.ADMIN, ["users:anonymize:all"])
    support = make_staff(db, Role.SUPPORT, ["orders:view:all", "orders:complete:all"])
    r = client.post(
        f"/admin/users/{support.id}/anonymize", json={"reason": "erasure"}, headers=bearer(dpo)
    )
    assert r.status_code == 403, r.text
    # Nor one's own password without the current one: a stolen session cannot lock the owner out.
    r = client.post(
        f"/admin/users/{root.id}/password",
        json={"new_password": "taken-over-456"},
        headers=bearer(root),
    )
    assert r.status_code == 409 and r.json()["code"] == "self_password_reset", r.text
    db.expire_all()
    assert db.get(User, root.id).password_hash == old_hash
    # A user whose grants the actor holds is still theirs to manage.
    r = client.post(
        f"/admin/users/{peer.id}/password",
        json={"new_password": "peer-new-pass-1"},
        headers=bearer(lesser),
    )
    assert r.status_code == 200, r.text


def test_trader_commission_at_creation_needs_the_commission_grant(client, db, unique) -> None:  # type: ignore[no-untyped-def]
    manager = make_staff(db, Role.ADMIN, ["users:manage:trader"])
    body = {
        "password": "long-enough-1",
        "role": "trader",
        "commission": {"payin_percent": "0", "payout_percent": "0"},
    }
    before = row_counts(db)
    r = _create(client, manager, email=f"t0-{unique}@example.com", **body)
    assert r.status_code == 403 and "trader_commissions:edit:all" in r.json()["detail"], r.text
    assert row_counts(db) == before
    # Without rates the trader is created (the platform's default commission applies) ...
    r = _create(client, manager, email=f"t1-{unique}@example.com", **{**body, "commission": None})
    assert r.status_code == 201, r.text
    # ... and with the grant the rates are set.
    setter = make_staff(db, Role.ADMIN, ["users:manage:trader", "trader_commissions:edit:all"])
    r = _create(client, setter, email=f"t2-{unique}@example.com", **body)
    assert r.status_code == 201, r.text
    trader = db.scalars(select(Trader).where(Trader.user_id == r.json()["id"])).one()
    assert db.scalars(
        select(TraderCommission).where(TraderCommission.trader_id == trader.id)
    ).one().commission_payin == Decimal("0")


@pytest.mark.parametrize(
    "field", [{"trafic_priority": 0}, {"pay_out": False}, {"pay_in": True}, {"team_lead_id": 1}]
)
def test_a_traders_traffic_settings_at_creation_need_the_trader_edit_grant(  # type: ignore[no-untyped-def]
    client, db, unique, field
) -> None:
    # What `PATCH /traders/{id}` sets under traders:edit:all is not set at creation without it.
    manager = make_staff(db, Role.ADMIN, ["users:manage:trader"])
    before = row_counts(db)
    body = {"password": "long-enough-1", "role": "trader", **field}
    r = _create(client, manager, email=f"t-{unique}@example.com", **body)
    assert r.status_code == 403 and "traders:edit:all" in r.json()["detail"], r.text
    assert row_counts(db) == before
    if "team_lead_id" in field:
        lead = make_staff(db, Role.TEAMLEAD, [])
        field = {
            "team_lead_id": db.scalars(select(TeamLead.id).where(TeamLead.user_id == lead.id)).one()
        }
    editor = make_staff(db, Role.ADMIN, ["users:manage:trader", "traders:edit:all"])
    body = {"password": "long-enough-1", "role": "trader", **field}
    r = _create(client, editor, email=f"t-{unique}@example.com", **body)
    assert r.status_code == 201, r.text


def test_deactivation_stops_tokens_at_once_and_guards_self_and_last_superuser(client, db) -> None:  # type: ignore[no-untyped-def]
    root = make_staff(db, Role.ADMIN, ["superuser"])
    # Other active superusers may exist in the shared test database: this admin is ours.
    others = db.scalars(select(User).where(User.role == Role.ADMIN.value, User.id != root.id)).all()
    for other in others:
        other.is_active = False
    db.flush()
    merchant = make_user(db, Role.MERCHANT)
    from jivapay.database.models import Merchant

    db.add(Merchant(user_id=merchant.id))
    db.flush()
    merchant_app = TestClient(build_app(Role.MERCHANT))
    token = {"Authorization": f"Bearer {create_access_token(merchant.id, Role.MERCHANT)}"}
    assert merchant_app.get("/merchant/me", headers=token).status_code == 200

    r = client.post(f"/admin/users/{merchant.id}/deactivate", headers=bearer(root))
    assert r.status_code == 200 and r.json()["changed"] is True
    assert merchant_app.get("/merchant/me", headers=token).status_code == 401
    r = client.post(f"/admin/users/{merchant.id}/deactivate", headers=bearer(root))
    assert r.json()["changed"] is False
    r = client.post(f"/admin/users/{merchant.id}/activate", headers=bearer(root))
    assert r.json()["changed"] is True
    # Reactivation does not bring back the tokens issued before the deactivation: a new login.
    r = merchant_app.get("/merchant/me", headers=token)
    assert r.status_code == 401 and r.json()["code"] == "token_revoked"
    db.expire_all()
    fresh = create_access_token(
        merchant.id, Role.MERCHANT, token_version=db.get(User, merchant.id).token_version
    )
    r = merchant_app.get("/merchant/me", headers={"Authorization": f"Bearer {fresh}"})
    assert r.status_code == 200

    r = client.post(f"/admin/users/{root.id}/deactivate", headers=bearer(root))
    assert r.status_code == 409 and r.json()["code"] == "self_deactivation"
    # A deputy who may manage admins but is not a superuser cannot act on one at all.
    deputy = make_staff(db, Role.ADMIN, ["users:*"])
    r = client.post(f"/admin/users/{root.id}/deactivate", headers=bearer(deputy))
    assert r.status_code == 403 and r.json()["permissions"] == ["superuser"], r.text
    r = client.put(
        f"/admin/users/{root.id}/permissions", json={"permissions": []}, headers=bearer(root)
    )
    assert r.status_code == 409 and r.json()["code"] == "last_superuser"
    # With a second superuser, the first may go.
    second = make_staff(db, Role.ADMIN, ["*"])
    r = client.post(f"/admin/users/{root.id}/deactivate", headers=bearer(second))
    assert r.status_code == 200


def test_list_detail_patch_stats_and_password_reset(client, db, superadmin, unique) -> None:  # type: ignore[no-untyped-def]
    r = _create(
        client,
        superadmin,
        email=f"find-{unique}@example.com",
        password="long-enough-1",
        role="merchant",
        first_name=f"Name{unique}",
    )
    uid = r.json()["id"]
    r = client.get(f"/admin/users?search=name{unique}", headers=bearer(superadmin))
    assert r.status_code == 200 and [u["id"] for u in r.json()["items"]] == [uid]
    r = client.get("/admin/users?role=merchant&active=true&limit=1", headers=bearer(superadmin))
    assert r.json()["limit"] == 1 and len(r.json()["items"]) == 1
    assert client.get("/admin/users?role=boss", headers=bearer(superadmin)).status_code == 422
    r = client.get(f"/admin/users/{uid}", headers=bearer(superadmin))
    assert r.json()["profile"]["first_name"] == f"Name{unique}"
    assert client.get("/admin/users/999999999", headers=bearer(superadmin)).status_code == 404

    r = client.patch(
        f"/admin/users/{uid}", json={"company_name": "New Co"}, headers=bearer(superadmin)
    )
    assert r.status_code == 200 and r.json()["changed"] is True
    before = row_counts(db)
    for bad in ({"email": "x@y.zz"}, {"role_description": "x"}, {"first_name": ""}):
        r = client.patch(f"/admin/users/{uid}", json=bad, headers=bearer(superadmin))
        assert r.status_code == 422, bad
    assert row_counts(db) == before

    stats = client.get("/admin/users/stats", headers=bearer(superadmin)).json()
    assert stats["by_role"]["merchant"]["active"] >= 1
    assert stats["total"] == sum(v["total"] for v in stats["by_role"].values())

    r = client.post(
        f"/admin/users/{uid}/password", json={"new_password": "short"}, headers=bearer(superadmin)
    )
    assert r.status_code == 422
    merchant = TestClient(build_app(Role.MERCHANT))
    before = {"Authorization": f"Bearer {create_access_token(uid, Role.MERCHANT)}"}
    assert merchant.get("/merchant/me", headers=before).status_code == 200
    r = client.post(
        f"/admin/users/{uid}/password",
        json={"new_password": "brand-new-pass"},
        headers=bearer(superadmin),
    )
    assert r.status_code == 200
    login = {"username": f"find-{unique}@example.com", "password": "brand-new-pass"}
    assert merchant.post("/merchant/auth/token", data=login).status_code == 200
    # A reset ends the sessions opened before it (whoever holds the old password or a token).
    r = merchant.get("/merchant/me", headers=before)
    assert r.status_code == 401 and r.json()["code"] == "token_revoked"


@pytest.mark.parametrize(
    "role", [Role.MERCHANT, Role.TRADER, Role.TEAMLEAD, Role.SUPPORT, Role.ADMIN]
)
def test_own_password_change_on_each_role_server(db, role, unique) -> None:  # type: ignore[no-untyped-def]
    from jivapay.services.auth_service import create_user

    user = create_user(db, email=f"own-{unique}@example.com", password="old-password-1", role=role)
    from importlib import import_module

    routers = import_module(f"jivapay.servers.{role.value}.server").ROUTERS
    app = TestClient(build_app(role, routers=routers))
    headers = bearer(user)
    path = f"/{role.value}/password"
    r = app.post(
        path, json={"current_password": "wrong", "new_password": "new-password-1"}, headers=headers
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_current_password"
    r = app.post(
        path, json={"current_password": "old-password-1", "new_password": "short"}, headers=headers
    )
    assert r.status_code == 422
    assert (
        app.post(path, json={"current_password": "x", "new_password": "y" * 9}).status_code == 401
    )
    r = app.post(
        path,
        json={"current_password": "old-password-1", "new_password": "new-password-1"},
        headers=headers,
    )
    assert r.status_code == 204
    # The change ends every session opened with the old password, this one included.
    r = app.get(f"/{role.value}/me", headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "token_revoked"
    login = {"username": user.email, "password": "new-password-1"}
    token = app.post(f"/{role.value}/auth/token", data=login).json()["access_token"]
    assert (
        app.get(f"/{role.value}/me", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    from jivapay.security import verify_password

    db.expire_all()
    assert verify_password("new-password-1", db.get(User, user.id).password_hash)
    assert db.scalars(
        select(AuditLog).where(
            AuditLog.action == "user.password_changed", AuditLog.user_id == user.id
        )
    ).one()
