"""The payer's page `GET /pay/{order_id}`, its live status `GET /pay/{order_id}/status`,
its static assets, and the cross-site guard of the payer's confirm.

The public id in the URL is the capability, so nothing here is cached, indexed, framed or leaked in a
Referer header; scripts and styles come only from this origin (no inline code). An unknown, malformed
or PayOut id answers the same plain 404 page after the same single lookup.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from typing import Annotated

from fastapi import Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from jivapay.api_routers.deps import DbSession
from jivapay.api_routers.gateway import payer_i18n
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.services import payer_page_service
from jivapay.services.payer_page_service import PayerPageState
from jivapay.utils.exceptions import Forbidden, NotFound

payer_router = LosslessJSONRouter(tags=["payer"])

# No-store, no referrer, no framing, no sniffing, the page's CSP and noindex: every answer under
# /pay/ gets them from `SecurityHeadersMiddleware`, errors included.
_ASSETS = {"pay.css": "text/css; charset=utf-8", "pay.js": "text/javascript; charset=utf-8"}


def reject_cross_site(
    request: Request,
    sec_fetch_site: Annotated[str | None, Header()] = None,
    origin: Annotated[str | None, Header()] = None,
) -> None:
    """A browser posting from another site is refused (`Sec-Fetch-Site`, else `Origin` vs Host)."""
    if sec_fetch_site is not None and sec_fetch_site not in ("same-origin", "none"):
        raise Forbidden("the payer confirms from the payment page only")
    if sec_fetch_site is None and origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            raise Forbidden("the payer confirms from the payment page only")


def _safe_return_url(url: str | None) -> str | None:
    return url if url and url.lower().startswith(("https://", "http://")) else None


def render(state: PayerPageState | None, language: str) -> tuple[str, int]:
    """The page for `state` in `language`, or the 404 page for None."""
    env = payer_i18n.environment(language)
    if state is None:
        return env.get_template("pay/not_found.html").render(lang=language), 404
    shown = replace(state, return_url=_safe_return_url(state.return_url))
    html = env.get_template("pay/page.html").render(
        lang=language,
        s=shown,
        amount_plain=format(state.amount_fiat, "f"),
        expires_iso=payer_i18n.iso(state.expires_at),
        confirm_iso=payer_i18n.iso(state.confirm_deadline_at),
    )
    return html, 200


@payer_router.get("/pay/assets/{name}", include_in_schema=False)
def payer_asset(name: str) -> Response:
    """The page's stylesheet and script (a fixed list; anything else is 404)."""
    if name not in _ASSETS:
        raise NotFound("asset not found")
    body = (resources.files("jivapay") / "static" / "pay" / name).read_bytes()
    return Response(
        body,
        media_type=_ASSETS[name],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


# A page for people, not an API operation: kept out of the OpenAPI document.
@payer_router.get("/pay/{order_id}", response_class=HTMLResponse, include_in_schema=False)
def payer_page(
    session: DbSession,
    order_id: str,
    lang: Annotated[str | None, Query(max_length=8)] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> HTMLResponse:
    """Server-rendered in ru, en or kk; the number is shown only while the order is pending and
    its payment deadline has not passed."""
    language = payer_i18n.choose_language(lang, accept_language)
    state = payer_page_service.get_state(session, public_id=order_id)
    html, status_code = render(state, language)
    headers = {"Content-Language": language, "Vary": "Accept-Language"}
    return HTMLResponse(html, status_code=status_code, headers=headers)


@payer_router.get("/pay/{order_id}/status", summary="The payer page's live status")
def payer_status(session: DbSession, order_id: str) -> JSONResponse:
    """`{status, closed, time_up}`: what the page polls to know when to redraw and when to stop
    (`time_up`: still pending, but past its payment deadline)."""
    state = payer_page_service.get_state(session, public_id=order_id)
    if state is None:
        raise NotFound("order not found")
    body = {"status": state.status, "closed": state.closed, "time_up": state.time_up}
    return JSONResponse(body)
