"""The permission matcher's edges and its refusals, word for word (pins what mutation testing found
unasserted: empty strings, `{id}` targets and the messages staff read)."""

from __future__ import annotations

import re

import pytest

from jivapay.enums import Role
from jivapay.permissions import (
    ROLE_TEMPLATES,
    ensure_permission,
    match_permission,
    template_permissions,
)
from jivapay.security import Principal
from jivapay.utils.exceptions import PermissionDenied, ValidationFailed


def _staff(*grants: str) -> Principal:
    return Principal(
        user_id=1, role=Role.SUPPORT, email="s@t.local", profile_id=1, permissions=grants
    )


@pytest.mark.parametrize("granted", ["*", "superuser", "*:*:*", "orders:*", "orders:view:all"])
def test_an_empty_required_permission_never_matches(granted: str) -> None:
    assert match_permission(granted, "") is False


@pytest.mark.parametrize("required", ["orders:view:all", "*", "superuser"])
def test_an_empty_grant_never_matches(required: str) -> None:
    assert match_permission("", required) is False


def test_ensure_permission_fills_the_target_id() -> None:
    principal = _staff("orders:view:store:7")
    ensure_permission(principal, "orders:view:store:{id}", 7)
    ensure_permission(principal, "orders:view:store:{id}", "7")
    with pytest.raises(PermissionDenied, match=r"^Missing permission orders:view:store:8$"):
        ensure_permission(principal, "orders:view:store:{id}", 8)
    # Without a target the placeholder stays literal and matches no concrete grant.
    with pytest.raises(PermissionDenied, match=r"^Missing permission orders:view:store:\{id\}$"):
        ensure_permission(principal, "orders:view:store:{id}")


def test_ensure_permission_names_what_is_missing() -> None:
    with pytest.raises(PermissionDenied, match=r"^Missing permission settings:edit:all$"):
        ensure_permission(_staff("settings:view:all"), "settings:edit:all")
    ensure_permission(_staff("settings:*"), "settings:edit:all")


def test_an_unknown_template_lists_the_known_ones() -> None:
    known = ", ".join(sorted(ROLE_TEMPLATES))
    assert "admin_full, admin_limited" in known
    message = f"unknown permission template 'nope' (known: {known})"
    with pytest.raises(ValidationFailed, match=f"^{re.escape(message)}$"):
        template_permissions("nope")


def test_malformed_grants_are_named_in_the_message() -> None:
    from jivapay.permissions import validate_grants

    message = "malformed permission(s): 'Orders:view', 42"
    with pytest.raises(ValidationFailed, match=f"^{re.escape(message)}$") as err:
        validate_grants(["orders:view:all", "Orders:view", 42])
    assert err.value.extra == {"invalid_permissions": ["'Orders:view'", "42"]}
