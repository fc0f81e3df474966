"""How the API servers are served: the uvicorn options `jivapay serve` runs every role server with.

One place, so that what serves production is what the benchmarks measure and the slow-client tests
exercise: the HTTP protocol with deadlines for slow clients (`http_protocol`), the keep-alive
timeout, no `Server` header, the largest header block accepted, and forwarded headers believed
only from the configured proxies.
"""

from __future__ import annotations

from typing import Any

from jivapay.servers.http_protocol import DeadlineH11Protocol

KEEP_ALIVE_SECONDS = 5
# h11 refuses (400) a request whose header block is still incomplete beyond this many bytes; one
# that arrives whole in a single read is parsed, so the effective bound is this plus one read.
MAX_HEADER_BYTES = 64 * 1024


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
        "http": DeadlineH11Protocol,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        **proxy_options(trusted_proxies),
    }
