"""The support API server: `uvicorn jivapay.servers.support.server:app` (or `jivapay serve --role support`).

Login and `/support/me` come from the app factory; the support's own routers are listed in ROUTERS and
are included behind `require_role(Role.SUPPORT)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.staff import requisites as staff_requisites
from jivapay.api_routers.staff import traders as staff_traders
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [
    staff_requisites.router_for(Role.SUPPORT),
    staff_traders.router_for(Role.SUPPORT),
]

app = build_app(Role.SUPPORT, routers=ROUTERS)
