"""The merchant API server: `uvicorn jivapay.servers.merchant.server:app` (or `jivapay serve --role merchant`).

Login and `/merchant/me` come from the app factory; the merchant's own routers are listed in ROUTERS and
are included behind `require_role(Role.MERCHANT)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.common.password import password_router
from jivapay.api_routers.merchant.balances import router as merchant_balances_router
from jivapay.api_routers.merchant.callbacks import router as merchant_callbacks_router
from jivapay.api_routers.merchant.orders import router as merchant_orders_router
from jivapay.api_routers.merchant.statistics import router as merchant_statistics_router
from jivapay.api_routers.merchant.stores import router as merchant_stores_router
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [
    merchant_stores_router,
    merchant_orders_router,
    merchant_balances_router,
    merchant_statistics_router,
    merchant_callbacks_router,
    password_router(Role.MERCHANT),
]

app = build_app(Role.MERCHANT, routers=ROUTERS)
