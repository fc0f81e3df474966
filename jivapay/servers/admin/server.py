"""The admin API server: `uvicorn jivapay.servers.admin.server:app` (or `jivapay serve --role admin`).

Login and `/admin/me` come from the app factory; the admin's own routers are listed in ROUTERS and
are included behind `require_role(Role.ADMIN)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.admin import exchange_rates as admin_exchange_rates
from jivapay.api_routers.admin import gdpr as admin_gdpr
from jivapay.api_routers.admin import logs as admin_logs
from jivapay.api_routers.admin import permissions as admin_permissions
from jivapay.api_routers.admin import reference as admin_reference
from jivapay.api_routers.admin import settings as admin_settings
from jivapay.api_routers.admin import system as admin_system
from jivapay.api_routers.admin import users as admin_users
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
    staff_online_stats.admin_router,
    under("/admin", staff_stores_router),
    staff_requisites.router_for(Role.ADMIN),
    staff_traders.router_for(Role.ADMIN),
    staff_traders.commission_router,
    password_router(Role.ADMIN),
    admin_permissions.router,
    admin_users.router,
    admin_settings.router,
    admin_reference.router,
    admin_exchange_rates.router,
    admin_logs.router,
    admin_gdpr.router,
    admin_system.router,
]

app = build_app(Role.ADMIN, routers=ROUTERS)
