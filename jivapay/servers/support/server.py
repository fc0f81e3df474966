"""The support API server: `uvicorn jivapay.servers.support.server:app` (or `jivapay serve --role support`).

Login and `/support/me` come from the app factory; the support's own routers are listed in ROUTERS and
are included behind `require_role(Role.SUPPORT)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.common.password import password_router
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [password_router(Role.SUPPORT)]

app = build_app(Role.SUPPORT, routers=ROUTERS)
