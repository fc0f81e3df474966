"""The public gateway server: `uvicorn jivapay.servers.gateway.server:app` (or `jivapay serve --role gateway`).

Stores authenticate inside the gateway routes (API key + request signature), so there is no login
and no role guard here. The order routes (`jivapay.api_routers.gateway.router`) join ROUTERS when
the gateway issue lands; until then the server answers `/health`, `/ready` and `/metrics`.
"""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.servers.app_factory import ServerName, build_app

ROUTERS: list[APIRouter] = []

app = build_app(ServerName.GATEWAY, routers=ROUTERS)
