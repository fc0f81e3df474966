"""The admin API server: `uvicorn jivapay.servers.admin.server:app` (or `jivapay serve --role admin`).

Login and `/admin/me` come from the app factory; the shared staff routers, the admin-only ones
(trader commission, identity, settings, reference data, logs, GDPR, system) and the own-password
route are included behind `require_role(Role.ADMIN)`; each route also checks its granted permission.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.admin import (
    exchange_rates,
    gdpr,
    logs,
    permissions,
    reference,
    settings,
    system,
    users,
)
from jivapay.api_routers.common.password import password_router
from jivapay.api_routers.staff import traders as staff_traders
from jivapay.api_routers.staff.routers import staff_routers
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [
    *staff_routers(Role.ADMIN),
    staff_traders.commission_router,
    password_router(Role.ADMIN),
    permissions.router,
    users.router,
    settings.router,
    reference.router,
    exchange_rates.router,
    logs.router,
    gdpr.router,
    system.router,
]

app = build_app(Role.ADMIN, routers=ROUTERS)
