"""The teamlead API server: `uvicorn jivapay.servers.teamlead.server:app` (or `jivapay serve --role teamlead`).

Login and `/teamlead/me` come from the app factory; the teamlead's own routers are listed in ROUTERS and
are included behind `require_role(Role.TEAMLEAD)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.common.online_stats import online_stats_router
from jivapay.api_routers.common.password import password_router
from jivapay.api_routers.teamlead.router import router as team_router
from jivapay.enums import Role
from jivapay.permissions import Permission
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [
    team_router,
    online_stats_router(Role.TEAMLEAD, Permission.REQUISITES_VIEW_TEAM),
    password_router(Role.TEAMLEAD),
]

app = build_app(Role.TEAMLEAD, routers=ROUTERS)
