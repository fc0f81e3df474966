"""Granted permissions of admins, supports and teamleads: the enumerated list of permission
strings with descriptions, the role templates, the matcher and grant validation (pure functions;
the audited editing of a user's grants is `services/permission_service.py`).

A permission is `resource:action:scope[:id]`. In a GRANT:
  - `*` in a middle position matches exactly one segment (`orders:*:all` grants `orders:view:all`);
  - a trailing `*` matches the rest, one or more segments (`orders:*` grants `orders:view:store:7`);
  - `*` or `superuser` alone, or a grant made only of `*` segments (`*:*:*`), matches everything,
    whatever its segment count (the original's `*:*:*` missed two-segment strings: a bug).
In a REQUIRED permission `{id}` is replaced by the target id before matching; the required side is
otherwise literal (a `*` there matches only a grant with `*` in the same place). Matching is
case-sensitive and an empty string never matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from jivapay.security import Principal
from jivapay.utils.exceptions import PermissionDenied, ValidationFailed

SUPERUSER = "superuser"
WILDCARD = "*"
ID_PLACEHOLDER = "{id}"


class Permission(StrEnum):
    """Every permission string the code checks; grants may also use wildcards over these."""

    ORDERS_VIEW_ALL = "orders:view:all"
    ORDERS_VIEW_STORE = "orders:view:store:{id}"
    ORDERS_VIEW_TEAM = "orders:view:team"
    ORDERS_COMPLETE_ALL = "orders:complete:all"
    ORDERS_CANCEL_ALL = "orders:cancel:all"
    ORDERS_EXPORT_ALL = "orders:export:all"
    INCOMING_ORDERS_VIEW_ALL = "incoming_orders:view:all"
    INCOMING_ORDERS_REVIEW_ALL = "incoming_orders:review:all"
    DISPUTES_VIEW_ALL = "disputes:view:all"
    DISPUTES_OPEN_ALL = "disputes:open:all"
    DISPUTES_RESOLVE_ALL = "disputes:resolve:all"
    REQUISITES_VIEW_ALL = "requisites:view:all"
    REQUISITES_VIEW_TEAM = "requisites:view:team"
    REQUISITES_MODERATE_ALL = "requisites:moderate:all"
    REQUISITES_EDIT_ALL = "requisites:edit:all"
    TRADERS_VIEW_ALL = "traders:view:all"
    TRADERS_VIEW_TEAM = "traders:view:team"
    TRADERS_CREATE_ALL = "traders:create:all"
    TRADERS_EDIT_ALL = "traders:edit:all"
    TRADERS_EDIT_ONE = "traders:edit:trader:{id}"
    TRADERS_TRAFFIC_ALL = "traders:traffic:all"
    TRADERS_TRAFFIC_TEAM = "traders:traffic:team"
    TRADER_COMMISSIONS_EDIT_ALL = "trader_commissions:edit:all"
    MERCHANTS_VIEW_ALL = "merchants:view:all"
    MERCHANTS_CREATE_ALL = "merchants:create:all"
    MERCHANTS_EDIT_ALL = "merchants:edit:all"
    STORES_VIEW_ALL = "stores:view:all"
    STORES_EDIT_ALL = "stores:edit:all"
    STORES_TRAFFIC_ALL = "stores:traffic:all"
    STORES_KEYS_ALL = "stores:keys:all"
    STORE_COMMISSIONS_EDIT_ALL = "store_commissions:edit:all"
    USERS_VIEW_ALL = "users:view:all"
    USERS_DEACTIVATE_ALL = "users:deactivate:all"
    USERS_MANAGE_ADMIN = "users:manage:admin"
    USERS_MANAGE_SUPPORT = "users:manage:support"
    USERS_MANAGE_TEAMLEAD = "users:manage:teamlead"
    USERS_MANAGE_MERCHANT = "users:manage:merchant"
    USERS_MANAGE_TRADER = "users:manage:trader"
    USERS_EXPORT_ALL = "users:export:all"
    USERS_ANONYMIZE_ALL = "users:anonymize:all"
    SETTINGS_VIEW_ALL = "settings:view:all"
    SETTINGS_EDIT_ALL = "settings:edit:all"
    AUDIT_LOGS_VIEW_ALL = "audit_logs:view:all"
    BALANCES_VIEW_ALL = "balances:view:all"
    BALANCES_VIEW_TEAM = "balances:view:team"
    BALANCES_VIEW_PLATFORM = "balances:view:platform"
    BALANCES_ADJUST_ALL = "balances:adjust:all"
    FRAUD_LISTS_VIEW_ALL = "fraud_lists:view:all"
    FRAUD_LISTS_EDIT_ALL = "fraud_lists:edit:all"
    REFERENCE_VIEW_ALL = "reference:view:all"
    REFERENCE_EDIT_ALL = "reference:edit:all"
    EXCHANGE_RATES_EDIT_ALL = "exchange_rates:edit:all"
    CALLBACKS_VIEW_ALL = "callbacks:view:all"
    CALLBACKS_RESEND_ALL = "callbacks:resend:all"


PERMISSION_DESCRIPTIONS: dict[Permission, str] = {
    Permission.ORDERS_VIEW_ALL: "See every order and its history",
    Permission.ORDERS_VIEW_STORE: "See the orders of one store (grant with the store id)",
    Permission.ORDERS_VIEW_TEAM: "Teamlead: see the orders of the own team's traders",
    Permission.ORDERS_COMPLETE_ALL: "Complete any pending or paid order on a trader's behalf",
    Permission.ORDERS_CANCEL_ALL: "Cancel any pending order",
    Permission.ORDERS_EXPORT_ALL: "Export order lists",
    Permission.INCOMING_ORDERS_VIEW_ALL: "See the intake queue (incoming orders)",
    Permission.INCOMING_ORDERS_REVIEW_ALL: "Release or reject orders held for fraud review",
    Permission.DISPUTES_VIEW_ALL: "See disputes and their evidence",
    Permission.DISPUTES_OPEN_ALL: "Open a dispute on any order",
    Permission.DISPUTES_RESOLVE_ALL: "Resolve disputes (complete or cancel the order)",
    Permission.REQUISITES_VIEW_ALL: "See every trader's requisites (masked numbers)",
    Permission.REQUISITES_VIEW_TEAM: "Teamlead: see the requisites of the own team",
    Permission.REQUISITES_MODERATE_ALL: "Approve, block or archive requisites",
    Permission.REQUISITES_EDIT_ALL: "Edit requisite limits and distribution settings",
    Permission.TRADERS_VIEW_ALL: "See every trader",
    Permission.TRADERS_VIEW_TEAM: "Teamlead: see the own team's traders",
    Permission.TRADERS_CREATE_ALL: "Create traders",
    Permission.TRADERS_EDIT_ALL: "Edit any trader's settings and limits",
    Permission.TRADERS_EDIT_ONE: "Edit one trader's settings (grant with the trader id)",
    Permission.TRADERS_TRAFFIC_ALL: "Switch any trader's traffic on or off",
    Permission.TRADERS_TRAFFIC_TEAM: "Teamlead: switch the own team's traffic on or off",
    Permission.TRADER_COMMISSIONS_EDIT_ALL: "Set trader commission rates",
    Permission.MERCHANTS_VIEW_ALL: "See every merchant",
    Permission.MERCHANTS_CREATE_ALL: "Create merchants",
    Permission.MERCHANTS_EDIT_ALL: "Edit merchants",
    Permission.STORES_VIEW_ALL: "See every store",
    Permission.STORES_EDIT_ALL: "Edit store settings and limits",
    Permission.STORES_TRAFFIC_ALL: "Switch a store's traffic access (trafic_access)",
    Permission.STORES_KEYS_ALL: "Rotate a store's API keys and callback secret",
    Permission.STORE_COMMISSIONS_EDIT_ALL: "Set store commission rates",
    Permission.USERS_VIEW_ALL: "See user accounts",
    Permission.USERS_DEACTIVATE_ALL: "Deactivate and reactivate user accounts",
    Permission.USERS_MANAGE_ADMIN: "Create admins and edit their permissions",
    Permission.USERS_MANAGE_SUPPORT: "Create supports and edit their permissions",
    Permission.USERS_MANAGE_TEAMLEAD: "Create teamleads and edit their permissions",
    Permission.USERS_MANAGE_MERCHANT: "Create and edit merchant accounts",
    Permission.USERS_MANAGE_TRADER: "Create and edit trader accounts",
    Permission.USERS_EXPORT_ALL: "Export everything stored about a person (GDPR access request)",
    Permission.USERS_ANONYMIZE_ALL: "Anonymise a person or a store's customer (GDPR erasure)",
    Permission.SETTINGS_VIEW_ALL: "See run-time configuration settings",
    Permission.SETTINGS_EDIT_ALL: "Change run-time configuration settings",
    Permission.AUDIT_LOGS_VIEW_ALL: "Read the audit log",
    Permission.BALANCES_VIEW_ALL: "See store and trader balances and their history",
    Permission.BALANCES_VIEW_TEAM: "Teamlead: see the own team's deposits",
    Permission.BALANCES_VIEW_PLATFORM: "See the platform's balance and profit",
    Permission.BALANCES_ADJUST_ALL: "Record deposits, withdrawals and manual adjustments",
    Permission.FRAUD_LISTS_VIEW_ALL: "See block and allow lists",
    Permission.FRAUD_LISTS_EDIT_ALL: "Edit block and allow lists",
    Permission.REFERENCE_VIEW_ALL: "See reference data (currencies, banks, methods)",
    Permission.REFERENCE_EDIT_ALL: "Edit reference data",
    Permission.EXCHANGE_RATES_EDIT_ALL: "Set exchange rates",
    Permission.CALLBACKS_VIEW_ALL: "See merchant callback deliveries",
    Permission.CALLBACKS_RESEND_ALL: "Re-send a merchant callback",
}

_READ_ONLY: tuple[str, ...] = (
    Permission.ORDERS_VIEW_ALL,
    Permission.INCOMING_ORDERS_VIEW_ALL,
    Permission.DISPUTES_VIEW_ALL,
    Permission.REQUISITES_VIEW_ALL,
    Permission.TRADERS_VIEW_ALL,
    Permission.MERCHANTS_VIEW_ALL,
    Permission.STORES_VIEW_ALL,
    Permission.CALLBACKS_VIEW_ALL,
    Permission.REFERENCE_VIEW_ALL,
)

ROLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "super_admin": (SUPERUSER,),
    # Everything except creating or editing other admins (only the super admin does that).
    "admin_full": (
        "orders:*",
        "incoming_orders:*",
        "disputes:*",
        "requisites:*",
        "traders:*",
        "trader_commissions:*",
        "merchants:*",
        "stores:*",
        "store_commissions:*",
        "users:view:all",
        "users:deactivate:all",
        Permission.USERS_MANAGE_SUPPORT,
        Permission.USERS_MANAGE_TEAMLEAD,
        Permission.USERS_MANAGE_MERCHANT,
        Permission.USERS_MANAGE_TRADER,
        "settings:*",
        "audit_logs:*",
        "balances:*",
        "fraud_lists:*",
        "reference:*",
        "exchange_rates:*",
        "callbacks:*",
    ),
    # Day-to-day operations; no settings, money adjustments or user management.
    "admin_limited": (
        *_READ_ONLY,
        Permission.ORDERS_COMPLETE_ALL,
        Permission.ORDERS_CANCEL_ALL,
        Permission.INCOMING_ORDERS_REVIEW_ALL,
        "disputes:*",
        Permission.REQUISITES_MODERATE_ALL,
        Permission.TRADERS_TRAFFIC_ALL,
        Permission.BALANCES_VIEW_ALL,
        Permission.FRAUD_LISTS_VIEW_ALL,
        Permission.CALLBACKS_RESEND_ALL,
        Permission.AUDIT_LOGS_VIEW_ALL,
    ),
    "support_orders": (
        Permission.ORDERS_VIEW_ALL,
        Permission.ORDERS_COMPLETE_ALL,
        Permission.ORDERS_CANCEL_ALL,
        Permission.INCOMING_ORDERS_VIEW_ALL,
        Permission.INCOMING_ORDERS_REVIEW_ALL,
        "disputes:*",
        Permission.CALLBACKS_VIEW_ALL,
        Permission.CALLBACKS_RESEND_ALL,
        Permission.STORES_VIEW_ALL,
        Permission.MERCHANTS_VIEW_ALL,
        Permission.TRADERS_VIEW_ALL,
        Permission.REQUISITES_VIEW_ALL,
    ),
    "support_trader_settings": (
        Permission.ORDERS_VIEW_ALL,
        Permission.TRADERS_VIEW_ALL,
        Permission.TRADERS_EDIT_ALL,
        Permission.TRADERS_TRAFFIC_ALL,
        Permission.REQUISITES_VIEW_ALL,
        Permission.REQUISITES_MODERATE_ALL,
        Permission.REQUISITES_EDIT_ALL,
    ),
    "support_readonly": _READ_ONLY,
    "teamlead": (
        Permission.TRADERS_VIEW_TEAM,
        Permission.TRADERS_TRAFFIC_TEAM,
        Permission.ORDERS_VIEW_TEAM,
        Permission.REQUISITES_VIEW_TEAM,
        Permission.BALANCES_VIEW_TEAM,
    ),
}


def template_permissions(name: str) -> list[str]:
    """The grants a role template pre-fills; `ValidationFailed` for an unknown template."""
    try:
        return [str(p) for p in ROLE_TEMPLATES[name]]
    except KeyError:
        known = ", ".join(sorted(ROLE_TEMPLATES))
        raise ValidationFailed(f"unknown permission template {name!r} (known: {known})") from None


# --------------------------------------------------------------------------- matching


def _segment_matches(granted: str, required: str) -> bool:
    return granted in (WILDCARD, required)


def match_permission(granted: str, required: str) -> bool:
    """Whether one granted permission covers one required permission (see the module docstring)."""
    if not granted or not required:
        return False
    if granted in (WILDCARD, SUPERUSER):
        return True
    g = granted.split(":")
    if all(segment == WILDCARD for segment in g):
        # `*:*:*` was meant as "everything"; the original failed it on two-segment strings.
        return True
    r = required.split(":")
    if "" in g or "" in r:
        return False
    if g[-1] == WILDCARD:
        head = g[:-1]
        if len(r) <= len(head):
            return False
        return all(_segment_matches(gs, rs) for gs, rs in zip(head, r, strict=False))
    if len(g) != len(r):
        return False
    return all(_segment_matches(gs, rs) for gs, rs in zip(g, r, strict=True))


def resolve_required(required: str, target_id: int | str | None = None) -> str:
    """`required` with `{id}` replaced by the target id (left as is without one)."""
    if target_id is None:
        return required
    return required.replace(ID_PLACEHOLDER, str(target_id))


def check_permission(
    principal_or_permissions: Principal | Iterable[str],
    required: str,
    target_id: int | str | None = None,
) -> bool:
    """Whether any grant of the principal (or of the given list) covers `required`."""
    if isinstance(principal_or_permissions, Principal):
        grants: Iterable[str] = principal_or_permissions.permissions
    else:
        grants = principal_or_permissions
    wanted = resolve_required(required, target_id)
    return any(match_permission(g, wanted) for g in grants)


def ensure_permission(
    principal: Principal, required: str, target_id: int | str | None = None
) -> None:
    """Raise `PermissionDenied` unless the principal holds `required`."""
    if not check_permission(principal, required, target_id):
        raise PermissionDenied(f"Missing permission {resolve_required(required, target_id)}")


# --------------------------------------------------------------------------- validation

_SEGMENT_RE = re.compile(r"^(\*|[a-z0-9_\-]+)$")
_MIN_SEGMENTS, _MAX_SEGMENTS = 2, 4


def is_valid_grant(permission: str) -> bool:
    """Whether a string is a well-formed grant: `*`, `superuser`, or 2-4 lower-case segments."""
    if permission in (WILDCARD, SUPERUSER):
        return True
    parts = permission.split(":")
    if not _MIN_SEGMENTS <= len(parts) <= _MAX_SEGMENTS:
        return False
    return all(_SEGMENT_RE.match(p) for p in parts)


def validate_grants(permissions: Iterable[Any]) -> list[str]:
    """The grants de-duplicated in order; `ValidationFailed` naming every malformed one."""
    clean: list[str] = []
    bad: list[str] = []
    for p in permissions:
        if not isinstance(p, str) or not is_valid_grant(p):
            bad.append(repr(p))
        elif p not in clean:
            clean.append(p)
    if bad:
        raise ValidationFailed(
            "malformed permission(s): " + ", ".join(bad),
            extra={"invalid_permissions": bad},
        )
    return clean
