"""How the API servers are served: the uvicorn options `jivapay serve` runs every role server with.

One place, so that what serves production is what the benchmarks measure and the slow-client tests
exercise: the HTTP protocol with deadlines for slow clients and a bound on the header block
(`http_protocol`), the keep-alive timeout, no `Server` header, and forwarded headers believed only
from the configured proxies.
"""

from __future__ import annotations

from typing import Any

from jivapay.servers.http_protocol import DeadlineHttpToolsProtocol

KEEP_ALIVE_SECONDS = 5


def proxy_options(trusted_proxies: str) -> dict[str, Any]:
    """uvicorn's forwarded-header options: believed only from the listed proxies, else never."""
    proxies = [p.strip() for p in trusted_proxies.split(",") if p.strip()]
    if not proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": proxies}


def uvicorn_options(trusted_proxies: str) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`, besides the app, host and port."""
    return {
        "server_header": False,
        # Idle keep-alive connections close after this; headers and bodies that trickle in are
        # cut by the protocol's own deadlines (HTTP_HEADER/BODY_TIMEOUT_SECONDS).
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "http": DeadlineHttpToolsProtocol,
        **proxy_options(trusted_proxies),
    }
