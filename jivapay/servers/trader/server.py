"""The trader API server: `uvicorn jivapay.servers.trader.server:app` (or `jivapay serve --role trader`).

Login and `/trader/me` come from the app factory; the trader's own routers are listed in ROUTERS and
are included behind `require_role(Role.TRADER)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.common.password import password_router
from jivapay.api_routers.common.trader_orders import router as trader_orders_router
from jivapay.api_routers.trader.account import router as trader_account_router
from jivapay.api_routers.trader.requisites import router as trader_requisites_router
from jivapay.enums import Role
from jivapay.servers.app_factory import build_app

ROUTERS: list[APIRouter] = [
    trader_orders_router,
    trader_requisites_router,
    trader_account_router,
    password_router(Role.TRADER),
]

app = build_app(Role.TRADER, routers=ROUTERS)
