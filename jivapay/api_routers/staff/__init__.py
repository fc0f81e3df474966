"""Routers of the staff servers (support and admin): the same routers are mounted on both, and the
caller's granted permissions decide what each may do."""

from fastapi import APIRouter

from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import Role


def mounted(role: Role, router: APIRouter) -> APIRouter:
    """`router` under the staff server's prefix (`/admin` or `/support`): one router, two servers."""
    outer = LosslessJSONRouter(prefix=f"/{role.value}")
    outer.include_router(router)
    return outer
