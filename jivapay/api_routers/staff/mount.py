"""Staff routers are written once and served by both staff servers, each under its own prefix
(`/admin/...`, `/support/...`): `under(prefix, *routers)` mounts them there."""

from __future__ import annotations

from fastapi import APIRouter


def under(prefix: str, *routers: APIRouter) -> APIRouter:
    """One router serving `routers` below `prefix`."""
    mounted = APIRouter(prefix=prefix)
    for router in routers:
        mounted.include_router(router)
    return mounted
