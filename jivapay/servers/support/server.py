"""The support API server: `uvicorn jivapay.servers.support.server:app` (or `jivapay serve --role support`).

Login and `/support/me` come from the app factory; the support's own routers are listed in ROUTERS and
are included behind `require_role(Role.SUPPORT)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.common.password import password_router
from jivapay.api_routers.staff import online_stats as staff_online_stats
from jivapay.api_routers.staff import requisites as staff_requisites
from jivapay.api_routers.staff import traders as staff_traders
from jivapay.api_routers.staff.mount import under
from jivapay.api_routers.staff.stores import router as staff_stores_router
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [
    # First: its literal path must win over any `/requisites/{id}` route added later.
    staff_online_stats.support_router,
    under("/support", staff_stores_router),
    staff_requisites.router_for(Role.SUPPORT),
    staff_traders.router_for(Role.SUPPORT),
    password_router(Role.SUPPORT),
]

app = build_app(Role.SUPPORT, routers=ROUTERS)
