"""`GET /admin|support/requisites/online-stats`: every trader's online requisites, for staff
holding `requisites:view:all`.

Include it before any router with `/requisites/{id}`, so the literal path wins."""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.common.online_stats import online_stats_router
from jivapay.enums import Role
from jivapay.permissions import Permission


def router_for(role: Role) -> APIRouter:
    """The staff online-stats router of `role`'s server (admin or support)."""
    return online_stats_router(role, Permission.REQUISITES_VIEW_ALL)
