"""The support API server: `uvicorn jivapay.servers.support.server:app` (or `jivapay serve --role support`).

Login and `/support/me` come from the app factory; the shared staff routers and the own-password route
are included behind `require_role(Role.SUPPORT)`; each route also checks its granted permission.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.common.password import password_router
from jivapay.api_routers.staff.routers import staff_routers
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [*staff_routers(Role.SUPPORT), password_router(Role.SUPPORT)]

app = build_app(Role.SUPPORT, routers=ROUTERS)
