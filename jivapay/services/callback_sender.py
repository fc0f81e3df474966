"""One merchant callback request on the wire: the URL's safety check, the POST, and what came back.

Callback URLs are chosen by merchants, so a request could otherwise reach the platform's own
network (SSRF). Unless `CALLBACK_ALLOW_PRIVATE_NETWORKS` is set, every address the host resolves to
must be public (not private, loopback, link-local, multicast, reserved or unspecified), and the
check runs inside the connection itself: the socket connects to the very address that was checked,
so a DNS answer that changes between a check and the connect (DNS rebinding) cannot slip through.
No proxy from the environment is used and redirects are never followed (a 3xx is a failure).

The timeout bounds the whole attempt, connect to last byte read: httpx's own timeout bounds each
read or write, so a receiver trickling a byte at a time could hold a callback worker (and outlive
the claim's lease, when the sweeper would start a second attempt) for as long as it liked.

Nothing here touches the database; `callback_service` decides what a result means.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

EXCERPT_BYTES = 1024
MAX_ERROR_CHARS = 500
# Most specific first: Python also counts loopback, link-local and reserved ranges as private.
_REFUSED_KINDS = ("loopback", "link_local", "multicast", "unspecified", "reserved", "private")


class UnsafeCallbackURL(Exception):
    """The callback URL resolves to an address the platform refuses to call."""


@dataclass(frozen=True)
class SendResult:
    """What one attempt produced: an HTTP answer, or an error before or instead of one."""

    status_code: int | None
    duration_ms: int
    error: str | None = None
    response_excerpt: str | None = None
    retry_after: str | None = None
    # True when retrying cannot help (a malformed URL or a scheme other than http/https).
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def _refusal(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4-mapped or 6to4 address reaches the IPv4 address inside it (6to4 through a
        # relay), which is the one to judge.
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    for kind in _REFUSED_KINDS:
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-public"


def public_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, or `UnsafeCallbackURL` if any of them is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"cannot resolve host {host!r}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        kind = _refusal(address)
        if kind is not None:
            raise UnsafeCallbackURL(
                f"callback URL refused: host {host!r} resolves to {address}, a {kind} address "
                "(only public addresses are called unless CALLBACK_ALLOW_PRIVATE_NETWORKS is set)"
            )
    return addresses


class _Deadline:
    """The moment an attempt must end by; each network operation gets what is left of it."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds

    def budget(self, timeout: float | None, expired: type[Exception]) -> float:
        left = self._ends - time.monotonic()
        if left <= 0:
            raise expired("the attempt's deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.budget(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        budget = self._deadline.budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, budget), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _CallbackBackend(httpcore.SyncBackend):
    """Connects within the attempt's deadline and, unless private networks are allowed, only to
    checked public addresses (the check and the connect use the same IP)."""

    def __init__(self, deadline: _Deadline, *, public_only: bool) -> None:
        self._deadline = deadline
        self._public_only = public_only

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = public_addresses(host, port) if self._public_only else [host]
        last: Exception | None = None
        for address in addresses:
            budget = self._deadline.budget(timeout, httpcore.ConnectTimeout)
            try:
                stream = super().connect_tcp(address, port, budget, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        raise last or httpcore.ConnectError(f"no address for host {host!r}")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs 30 ms of CPU; every send made two before the chaos run showed
    # callback delivery limited by it. One verifying context per process, shared by all sends.
    return httpx.create_ssl_context(trust_env=False)


class _CallbackTransport(httpx.HTTPTransport):
    def __init__(self, backend: _CallbackBackend) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False)
        # httpx exposes no hook for the network backend; its pool is the same httpcore pool,
        # built here with the callback backend (TLS still verifies the URL's host name).
        self._pool = httpcore.ConnectionPool(ssl_context=_ssl_context(), network_backend=backend)


def url_problem(url: str) -> str | None:
    """Why `url` can never be called (scheme, host), or None when it is well formed."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "callback URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
        httpx.URL(url)  # the client's own parser: an invalid international host fails here
    except (ValueError, httpx.InvalidURL):
        return "callback URL is malformed"
    if parts.scheme.lower() not in ("http", "https"):
        return "callback URL must use http or https"
    if not parts.hostname:
        return "callback URL has no host"
    return None


def _read_excerpt(response: httpx.Response) -> str:
    data = b""
    # Raw bytes: a compressed answer is never inflated, so a small body cannot become a large one.
    for chunk in response.iter_raw():
        data += chunk
        if len(data) >= EXCERPT_BYTES:
            break
    # PostgreSQL text cannot hold NUL characters.
    return data[:EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _error_text(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def send(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool,
) -> SendResult:
    """POST `body` to `url` once (no redirects, no proxy), within `timeout` seconds in all, and
    describe what happened."""
    problem = url_problem(url)
    if problem is not None:
        return SendResult(status_code=None, duration_ms=0, error=problem, permanent=True)
    started = time.monotonic()
    transport = _CallbackTransport(
        _CallbackBackend(_Deadline(timeout), public_only=not allow_private)
    )
    status: int | None = None
    excerpt: str | None = None
    retry_after: str | None = None
    error: str | None = None
    try:
        with (
            httpx.Client(
                transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
            ) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            status = response.status_code
            retry_after = response.headers.get("retry-after")
            excerpt = _read_excerpt(response)
    except UnsafeCallbackURL as exc:
        error = str(exc)
    except httpx.TimeoutException as exc:
        error = f"timed out after {timeout:g} s ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        error = _error_text(exc)
    except Exception as exc:  # anything else is a failed attempt too, never a crashed worker
        error = _error_text(exc)
    duration_ms = int((time.monotonic() - started) * 1000)
    if error is None and status is not None and 300 <= status < 400:
        error = f"redirect not followed: the endpoint answered {status}"
    return SendResult(
        status_code=status,
        duration_ms=duration_ms,
        error=error,
        response_excerpt=excerpt,
        retry_after=retry_after,
    )
