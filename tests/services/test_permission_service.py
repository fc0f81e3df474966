"""The permission matcher, the enumerated list, role templates and audited grant editing."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import AuditLog, Support
from jivapay.enums import Role
from jivapay.permissions import (
    PERMISSION_DESCRIPTIONS,
    ROLE_TEMPLATES,
    Permission,
    check_permission,
    is_valid_grant,
    match_permission,
    template_permissions,
    validate_grants,
)
from jivapay.security import Principal
from jivapay.services.auth_service import create_user
from jivapay.services.permission_service import update_user_permissions
from jivapay.utils.exceptions import NotFound, PermissionDenied, ValidationFailed


@pytest.mark.parametrize(
    ("granted", "required", "expected"),
    [
        # exact
        ("orders:view:all", "orders:view:all", True),
        ("orders:view:all", "orders:view:team", False),
        ("orders:view:store:5", "orders:view:store:5", True),
        ("orders:view:store:5", "orders:view:store:6", False),
        ("users:manage", "users:manage", True),
        # middle * matches exactly one segment
        ("orders:*:all", "orders:view:all", True),
        ("orders:*:all", "orders:cancel:all", True),
        ("orders:*:all", "orders:view:team", False),
        ("orders:*:all", "orders:view:all:5", False),
        ("*:view:all", "traders:view:all", True),
        ("*:view:all", "traders:edit:all", False),
        ("orders:view:*:5", "orders:view:store:5", True),
        ("orders:view:*:5", "orders:view:store:6", False),
        # trailing * matches one or more segments
        ("orders:*", "orders:view:all", True),
        ("orders:*", "orders:view:store:9", True),
        ("orders:*", "orders:view", True),
        ("orders:*", "orders", False),
        ("orders:*", "disputes:view:all", False),
        ("orders:view:*", "orders:view:all", True),
        ("orders:view:*", "orders:view:store:3", True),
        ("orders:view:*", "orders:view", False),
        ("orders:view:*", "orders:cancel:all", False),
        ("*:*", "orders:view:all", True),
        ("*:*:*", "orders:view:all", True),
        ("*:*:*", "orders:view:store:1", True),
        ("*:*:*", "users:manage", True),
        ("*:*", "orders:view:store:1", True),
        # * and superuser match everything, any segment count
        ("*", "orders:view:all", True),
        ("*", "users:manage", True),
        ("*", "orders:view:store:1", True),
        ("*", "anything", True),
        ("superuser", "orders:view:all", True),
        ("superuser", "users:manage", True),
        ("superuser", "settings:edit:all", True),
        # segment-count mismatches without wildcards
        ("orders:view", "orders:view:all", False),
        ("orders:view:all", "orders:view", False),
        ("orders:view:all:1", "orders:view:all", False),
        # empty strings and empty segments
        ("", "orders:view:all", False),
        ("orders:view:all", "", False),
        ("", "", False),
        ("orders::all", "orders::all", False),
        ("orders:*", "orders:", False),
        # case sensitivity
        ("Orders:view:all", "orders:view:all", False),
        ("orders:view:all", "ORDERS:VIEW:ALL", False),
        ("SUPERUSER", "orders:view:all", False),
        # a * on the required side is literal
        ("orders:view:all", "orders:*:all", False),
        ("orders:*:all", "orders:*:all", True),
        # other words are not wildcards
        ("orders:view:all", "orders:view:alls", False),
        ("superusers", "orders:view:all", False),
    ],
)
def test_match_permission(granted: str, required: str, expected: bool) -> None:
    assert match_permission(granted, required) is expected


@pytest.mark.parametrize(
    ("grants", "required", "target", "expected"),
    [
        (["orders:view:store:7"], "orders:view:store:{id}", 7, True),
        (["orders:view:store:7"], "orders:view:store:{id}", "7", True),
        (["orders:view:store:7"], "orders:view:store:{id}", 8, False),
        (["orders:view:store:*"], "orders:view:store:{id}", 8, True),
        (["orders:view:*"], "orders:view:store:{id}", 8, True),
        # without a target id only a wildcard in that position covers {id}
        (["orders:view:store:7"], "orders:view:store:{id}", None, False),
        (["orders:view:store:*"], "orders:view:store:{id}", None, True),
        ([], "orders:view:all", None, False),
        (["orders:view:team", "orders:view:all"], "orders:view:all", None, True),
        (["superuser"], "traders:edit:trader:{id}", 3, True),
    ],
)
def test_check_permission(
    grants: list[str], required: str, target: int | str | None, expected: bool
) -> None:
    assert check_permission(grants, required, target) is expected


def test_check_permission_reads_the_principal_grants() -> None:
    principal = Principal(
        user_id=1, role=Role.SUPPORT, email="s@x", profile_id=1, permissions=("orders:*",)
    )
    assert check_permission(principal, Permission.ORDERS_CANCEL_ALL)
    assert not check_permission(principal, Permission.SETTINGS_EDIT_ALL)


def test_every_permission_is_documented_and_well_formed() -> None:
    assert set(PERMISSION_DESCRIPTIONS) == set(Permission)
    for perm in Permission:
        concrete = perm.value.replace("{id}", "1")
        assert is_valid_grant(concrete), perm
    for role in ("admin", "support", "teamlead", "merchant", "trader"):
        assert f"users:manage:{role}" in {p.value for p in Permission}


@pytest.mark.parametrize("name", sorted(ROLE_TEMPLATES))
def test_templates_are_valid_and_each_grant_covers_a_listed_permission(name: str) -> None:
    grants = template_permissions(name)
    assert grants == validate_grants(grants)
    listed = [p.value for p in Permission]
    for grant in grants:
        assert any(match_permission(grant, p) for p in listed), grant


def test_template_contents() -> None:
    assert template_permissions("super_admin") == ["superuser"]
    assert check_permission(template_permissions("admin_full"), "users:manage:support")
    assert not check_permission(template_permissions("admin_full"), "users:manage:admin")
    assert not check_permission(template_permissions("support_readonly"), "orders:cancel:all")
    assert check_permission(template_permissions("support_orders"), "disputes:resolve:all")
    assert check_permission(template_permissions("teamlead"), "traders:traffic:team")
    assert not check_permission(template_permissions("teamlead"), "traders:traffic:all")
    with pytest.raises(ValidationFailed):
        template_permissions("nope")


@pytest.mark.parametrize(
    ("grant", "ok"),
    [
        ("*", True),
        ("superuser", True),
        ("orders:view:all", True),
        ("orders:*", True),
        ("orders:view:store:12", True),
        ("orders", False),
        ("a:b:c:d:e", False),
        ("Orders:view:all", False),
        ("orders::all", False),
        ("orders:view:{id}", False),
        ("orders view all", False),
        ("", False),
    ],
)
def test_grant_syntax(grant: str, ok: bool) -> None:
    assert is_valid_grant(grant) is ok


def test_validate_grants_dedupes_and_names_bad_ones() -> None:
    assert validate_grants(["orders:*", "orders:*", "*"]) == ["orders:*", "*"]
    with pytest.raises(ValidationFailed) as info:
        validate_grants(["orders:*", "BAD", 3])
    assert info.value.extra["invalid_permissions"] == ["'BAD'", "3"]


# --------------------------------------------------------------------------- editing (database)


def _actor(permissions: tuple[str, ...], user_id: int) -> Principal:
    return Principal(
        user_id=user_id, role=Role.ADMIN, email="a@x", profile_id=1, permissions=permissions
    )


def test_update_permissions_stores_and_audits(db: Session, unique: str) -> None:
    admin = create_user(db, email=f"adm{unique}@x.io", password="pw-123456", role=Role.ADMIN)
    target = create_user(
        db,
        email=f"sup{unique}@x.io",
        password="pw-123456",
        role=Role.SUPPORT,
        template="support_readonly",
    )
    actor = _actor(tuple(template_permissions("admin_full")), admin.id)
    new = update_user_permissions(
        db,
        actor=actor,
        target_user_id=target.id,
        permissions=["orders:view:all", "disputes:*", "orders:view:all"],
    )
    assert new == ["orders:view:all", "disputes:*"]
    profile = db.scalars(select(Support).where(Support.user_id == target.id)).one()
    db.refresh(profile)
    assert profile.granted_permissions == ["orders:view:all", "disputes:*"]
    row = db.scalars(
        select(AuditLog).where(
            AuditLog.action == "permissions.updated", AuditLog.target_id == str(target.id)
        )
    ).one()
    assert row.user_id == admin.id
    assert row.details["added"] == ["disputes:*"]
    assert "stores:view:all" in row.details["removed"]


def test_update_permissions_requires_managing_that_role(db: Session, unique: str) -> None:
    admin = create_user(db, email=f"adm{unique}@x.io", password="pw-123456", role=Role.ADMIN)
    other = create_user(db, email=f"oth{unique}@x.io", password="pw-123456", role=Role.ADMIN)
    actor = _actor(tuple(template_permissions("admin_full")), admin.id)
    with pytest.raises(PermissionDenied):
        update_user_permissions(db, actor=actor, target_user_id=other.id, permissions=["orders:*"])
    superuser = _actor(("superuser",), admin.id)
    assert update_user_permissions(
        db, actor=superuser, target_user_id=other.id, permissions=["superuser"]
    ) == ["superuser"]


def test_update_permissions_refuses_escalation_and_bad_input(db: Session, unique: str) -> None:
    admin = create_user(db, email=f"adm{unique}@x.io", password="pw-123456", role=Role.ADMIN)
    lead = create_user(db, email=f"tl{unique}@x.io", password="pw-123456", role=Role.TEAMLEAD)
    trader = create_user(db, email=f"tr{unique}@x.io", password="pw-123456", role=Role.TRADER)
    actor = _actor(("users:manage:teamlead", "traders:*"), admin.id)
    with pytest.raises(PermissionDenied) as info:
        update_user_permissions(
            db, actor=actor, target_user_id=lead.id, permissions=["traders:view:team", "*"]
        )
    assert info.value.extra["permissions"] == ["*"]
    with pytest.raises(ValidationFailed):
        update_user_permissions(db, actor=actor, target_user_id=lead.id, permissions=["bad"])
    with pytest.raises(ValidationFailed):
        update_user_permissions(db, actor=actor, target_user_id=trader.id, permissions=[])
    with pytest.raises(NotFound):
        update_user_permissions(db, actor=actor, target_user_id=10**12, permissions=[])
    assert update_user_permissions(
        db, actor=actor, target_user_id=lead.id, permissions=["traders:view:team"]
    ) == ["traders:view:team"]
