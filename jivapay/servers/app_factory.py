"""Builds each API server: one FastAPI app per role plus the public gateway.

`build_app` wires what every server shares, in this order (outermost first): request context
(request id, access log, metrics; wraps even Starlette's error middleware so 500s carry the id),
the default rate limit, the problem+json error handlers, `/health`, `/ready`, `/metrics`, docs at
`/docs` and `/openapi.json` (Swagger UI's assets served from the `swagger-ui-py` package under
`/docs/assets`, so the page works with no network), then the role's routes. Every route reads JSON
numbers as `Decimal` (`api_routers.routing.LosslessJSONRoute`). Role servers get their login route
(with the login rate limit) and `/{role}/me`; every other router passed in is guarded by
`require_role(role)`. The gateway authenticates stores inside its own routes, so its routers are
included as given. Nothing here touches the database or Redis at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import structlog
import swagger_ui
from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from starlette.types import ASGIApp

from jivapay.api_routers.common.health import health_router
from jivapay.api_routers.responses import document_problems
from jivapay.api_routers.routing import LosslessJSONRoute
from jivapay.config import get_settings
from jivapay.enums import Role, ServerName
from jivapay.middleware.input_guard import InputGuardMiddleware, database_data_error
from jivapay.middleware.rate_limiting import (
    STORE_ROUTES_STATE,
    RateLimitMiddleware,
    login_rate_limit,
    store_authenticated_routes,
)
from jivapay.middleware.request_context import RequestContextMiddleware
from jivapay.middleware.security_headers import SecurityHeadersMiddleware
from jivapay.servers.exception_handlers import register_exception_handlers
from jivapay.utils.logging import configure_logging
from jivapay.utils.notifications import init_sentry

log = structlog.get_logger(__name__)


DEFAULT_PORTS: dict[ServerName, int] = {
    ServerName.MERCHANT: 8001,
    ServerName.TRADER: 8002,
    ServerName.GATEWAY: 8003,
    ServerName.ADMIN: 8004,
    ServerName.SUPPORT: 8005,
    ServerName.TEAMLEAD: 8006,
}

_TITLES: dict[ServerName, str] = {
    ServerName.GATEWAY: "JivaPay Gateway API",
    ServerName.MERCHANT: "JivaPay Merchant API",
    ServerName.TRADER: "JivaPay Trader API",
    ServerName.TEAMLEAD: "JivaPay Teamlead API",
    ServerName.SUPPORT: "JivaPay Support API",
    ServerName.ADMIN: "JivaPay Admin API",
}


class JivaPayAPI(FastAPI):
    """FastAPI whose outermost layers are the request-context and security-header middlewares."""

    server_name: str = "unknown"

    def build_middleware_stack(self) -> ASGIApp:
        # Outside ServerErrorMiddleware: the unhandled-error 500 gets the X-Request-ID header and
        # the security headers too, and the handler's log line still sees the bound request id.
        return RequestContextMiddleware(
            SecurityHeadersMiddleware(super().build_middleware_stack()), server=self.server_name
        )


def process_name(server: ServerName | str) -> str:
    return f"api-{ServerName(server).value}"


def _lifespan(server: ServerName) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        configure_logging(process_name(server))
        init_sentry(process_name(server))
        log.info("server_started", server=server.value)
        yield
        log.info("server_stopped", server=server.value)

    return lifespan


DOCS_URL = "/docs"
DOCS_ASSETS_URL = "/docs/assets"
_SWAGGER_UI_STATIC = Path(swagger_ui.__file__).parent / "static"


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI at `/docs` with its JavaScript, CSS and icon served by this server itself."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = f"{DOCS_URL}/oauth2-redirect"
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=_SWAGGER_UI_STATIC), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui_html() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - docs",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon-32x32.png",
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def _role_routes(app: FastAPI, role: Role) -> None:
    from jivapay.api_routers.common.auth import login_router
    from jivapay.api_routers.common.me import me_router

    app.include_router(
        login_router(role),
        dependencies=[Depends(login_rate_limit(), scope="function")],
    )
    app.include_router(me_router(role))


def build_app(
    role: Role | Literal["gateway"] | ServerName,
    *,
    routers: Sequence[APIRouter] = (),
    title: str | None = None,
) -> FastAPI:
    """The ASGI app of one server: shared plumbing, then `routers` (role-guarded on role servers)."""
    server = ServerName(str(role))
    settings = get_settings()
    docs = (
        settings.DOCS_ENABLED if settings.DOCS_ENABLED is not None else not settings.is_production
    )
    app = JivaPayAPI(
        title=title or _TITLES[server],
        version="0.1.0",
        lifespan=_lifespan(server),
        docs_url=None,  # served by `_offline_docs`, without a CDN
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.router.route_class = LosslessJSONRoute  # the app's own routes (the docs page) too
    app.server_name = server.value
    app.state.server_name = server.value
    document_problems(app)
    register_exception_handlers(app)
    app.add_exception_handler(DataError, database_data_error)
    app.add_middleware(RateLimitMiddleware, server=server.value)
    app.add_middleware(InputGuardMiddleware)
    app.include_router(health_router(server.value, metrics=settings.METRICS_PORT is None))
    if docs:
        _offline_docs(app)

    if server is ServerName.GATEWAY:
        for router in routers:
            app.include_router(router)
        # The limiter counts these only once the store's signature verifies.
        setattr(app.state, STORE_ROUTES_STATE, store_authenticated_routes(routers))
        return app

    from jivapay.api_routers.auth import require_role
    from jivapay.api_routers.deps import strict_query

    user_role = Role(server.value)
    _role_routes(app, user_role)
    # Every role route refuses a query parameter it does not declare: a mistyped filter answers
    # 422 instead of a list that silently ignores it.
    guard = [Depends(require_role(user_role)), Depends(strict_query)]
    for router in routers:
        app.include_router(router, dependencies=guard)
    return app
