"""The support API server: `uvicorn jivapay.servers.support.server:app` (or `jivapay serve --role support`).

Login and `/support/me` come from the app factory; the support's own routers are listed in ROUTERS and
are included behind `require_role(Role.SUPPORT)`.
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
    mounted(Role.SUPPORT, staff_orders.router),
    mounted(Role.SUPPORT, staff_intake.router),
    mounted(Role.SUPPORT, staff_disputes.router),
    mounted(Role.SUPPORT, staff_balances.router),
    mounted(Role.SUPPORT, staff_fraud_lists.router),
    mounted(Role.SUPPORT, staff_callbacks.router),
    mounted(Role.SUPPORT, staff_merchants.router),
]

app = build_app(Role.SUPPORT, routers=ROUTERS)
