"""The public gateway server: `uvicorn jivapay.servers.gateway.server:app` (or `jivapay serve --role gateway`).

Stores authenticate inside the gateway routes (API key + request signature), so there is no login
and no role guard here. The order routes live in `jivapay.api_routers.gateway.router`, the payer
page in `jivapay.api_routers.gateway.payer_page`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.gateway.callbacks import router as callbacks_router
from jivapay.api_routers.gateway.payer_page import payer_router
from jivapay.api_routers.gateway.router import router as gateway_router
from jivapay.servers.app_factory import ServerName, build_app

ROUTERS: list[APIRouter] = [gateway_router, callbacks_router, payer_router]

app = build_app(ServerName.GATEWAY, routers=ROUTERS)
