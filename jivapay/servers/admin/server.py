"""The admin API server: `uvicorn jivapay.servers.admin.server:app` (or `jivapay serve --role admin`).

Login and `/admin/me` come from the app factory; the admin's own routers are listed in ROUTERS and
are included behind `require_role(Role.ADMIN)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.staff import balances as staff_balances
from jivapay.api_routers.staff import callbacks as staff_callbacks
from jivapay.api_routers.staff import disputes as staff_disputes
from jivapay.api_routers.staff import fraud_lists as staff_fraud_lists
from jivapay.api_routers.staff import intake as staff_intake
from jivapay.api_routers.staff import merchants as staff_merchants
from jivapay.api_routers.staff import mounted
from jivapay.api_routers.staff import orders as staff_orders
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [
    mounted(Role.ADMIN, staff_orders.router),
    mounted(Role.ADMIN, staff_intake.router),
    mounted(Role.ADMIN, staff_disputes.router),
    mounted(Role.ADMIN, staff_balances.router),
    mounted(Role.ADMIN, staff_fraud_lists.router),
    mounted(Role.ADMIN, staff_callbacks.router),
    mounted(Role.ADMIN, staff_merchants.router),
]

app = build_app(Role.ADMIN, routers=ROUTERS)
