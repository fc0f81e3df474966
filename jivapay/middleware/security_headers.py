"""Headers every response of every server carries (pure ASGI).

`Cache-Control: no-store` (answers hold card numbers and balances; a route may set its own),
`X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`, and
`Strict-Transport-Security` when the request came over TLS (`https`, as uvicorn sees it directly or
from a trusted proxy's `X-Forwarded-Proto`). Every answer under the payer's page (`/pay/`), its errors
included, also carries the page's `Content-Security-Policy` and `X-Robots-Tag: noindex, nofollow`.
The `server` banner is switched off in `jivapay serve`.

The app factory puts this layer outside Starlette's error middleware, so an unexpected 500 carries
the headers too.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = "max-age=31536000; includeSubDomains"
_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAYER_PAGE_PREFIX = "/pay/"
PAYER_PAGE_HEADERS = {
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"
        payer_page = str(scope.get("path", "")).startswith(PAYER_PAGE_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Cache-Control", "no-store")
                if payer_page:
                    for name, value in PAYER_PAGE_HEADERS.items():
                        headers.setdefault(name, value)
                if tls:
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)
