"""Rate limiting on every server, on top of the `limits` library and Redis (moving windows).

- A default limit on every route (`RATE_LIMIT_DEFAULT`), applied by `RateLimitMiddleware` before
  routing. It is keyed by the bearer token's subject when the token decodes, else by the
  `X-API-Key` header, else by the client IP (`scope["client"]`; forwarded headers are trusted only
  when uvicorn is told to, via `--proxy-headers`/`--forwarded-allow-ips`).
- Per-route limits through the dependency `rate_limit(setting_key, key=...)`: login by IP, gateway
  intake by the store's API key.
- Limits are DB settings read live through `config_loader` (cached ~5 s), so a change applies
  without a restart.
- 429s are problem+json (`rate_limited`) with `Retry-After` = seconds until the window frees a slot.
  A key refused `RATE_LIMIT_BLOCK_AFTER_VIOLATIONS` times within `RATE_LIMIT_BLOCK_WINDOW_SECONDS`
  is blocked for `RATE_LIMIT_BLOCK_SECONDS` (`client_blocked`).
- Redis down: requests are served (fail open), a warning is logged and
  `rate_limit_storage_errors_total` counts it; the storage is not retried for a second, so a dead
  Redis costs at most one short timeout per second.
- `/health`, `/ready`, `/metrics` are exempt.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import anyio.to_thread
import structlog
from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.errors import StorageError as LimitsStorageError
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from jivapay.config import Environment, get_settings
from jivapay.enums import KeyKind
from jivapay.servers.exception_handlers import problem_response
from jivapay.utils.config_loader import get_spec, get_typed_config_value
from jivapay.utils.exceptions import ConfigurationError, RateLimited
from jivapay.utils.metrics import RATE_LIMIT_EXCEEDED_TOTAL, RATE_LIMIT_STORAGE_ERRORS_TOTAL

log = structlog.get_logger(__name__)

DEFAULT_SETTING = "RATE_LIMIT_DEFAULT"
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
STORAGE_SOCKET_TIMEOUT = 0.2
# After a storage failure, checks are skipped this long instead of paying a timeout per request.
STORAGE_RETRY_INTERVAL = 1.0
SETTING_FALLBACK_SECONDS = 5.0
_STORAGE_ERRORS: tuple[type[Exception], ...] = (RedisError, LimitsStorageError, OSError)


class ClientBlocked(RateLimited):
    """A key that kept exceeding its limits is refused for a while."""

    code = "client_blocked"
    title = "Client temporarily blocked"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    blocked: bool = False

    def error(self) -> RateLimited:
        if self.blocked:
            return ClientBlocked(
                f"Too many rejected requests; blocked for {self.retry_after} s",
                retry_after=self.retry_after,
            )
        return RateLimited(
            f"Rate limit exceeded; retry in {self.retry_after} s", retry_after=self.retry_after
        )


ALLOWED = Decision(allowed=True)


@lru_cache(maxsize=64)
def _parse_limits(value: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(value))


_fallback_until: dict[str, float] = {}


def _setting(key: str) -> Any:
    """A live setting; its declared default when the database cannot be read (never raises)."""
    if _fallback_until.get(key, 0.0) > time.monotonic():
        return get_spec(key).default
    try:
        return get_typed_config_value(key)
    except Exception as exc:
        # Like the loader's cache: do not query (and warn) on every request while the DB is down.
        _fallback_until[key] = time.monotonic() + SETTING_FALLBACK_SECONDS
        log.warning("rate_limit_setting_unreadable", key=key, error=str(exc))
        return get_spec(key).default


def _limits_for(setting_key: str) -> tuple[RateLimitItem, ...]:
    value = _setting(setting_key)
    try:
        return _parse_limits(str(value))
    except ValueError:
        log.warning("rate_limit_setting_invalid", key=setting_key, value=value)
        return _parse_limits(str(get_spec(setting_key).default))


def _default_key_prefix() -> str:
    # Concurrent test runs share one Redis; each process counts its own requests.
    if get_settings().ENVIRONMENT == Environment.TEST:
        return f"jivapay-rl-test-{os.getpid()}"
    return "jivapay-rl"


class RequestRateLimiter:
    """The process's limiter: a `limits` storage plus the repeated-violator block list."""

    def __init__(self, storage_url: str | None = None, *, key_prefix: str | None = None) -> None:
        url = storage_url or get_settings().REDIS_URL
        self.key_prefix = key_prefix or _default_key_prefix()
        self.storage: Storage
        if url and url.startswith(("redis://", "rediss://", "redis+unix://")):
            self.storage = RedisStorage(
                url,
                key_prefix=self.key_prefix,
                socket_timeout=STORAGE_SOCKET_TIMEOUT,
                socket_connect_timeout=STORAGE_SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type]
            )
        elif url:
            storage = storage_from_string(url)
            if not isinstance(storage, Storage):
                raise ConfigurationError(f"rate limit storage must be synchronous: {url}")
            self.storage = storage
        else:
            log.warning("rate_limit_memory_storage", reason="REDIS_URL is not set")
            self.storage = MemoryStorage()
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._down_until = 0.0

    # ------------------------------------------------------------------ public

    def check(self, setting_key: str, identity: str, *, scope: str, server: str) -> Decision:
        """Count one request of `identity` against `setting_key`'s limits; fail open on errors."""
        if time.monotonic() < self._down_until:
            return ALLOWED
        items = _limits_for(setting_key)
        try:
            blocked_for = self._blocked_seconds(identity)
            if blocked_for > 0:
                RATE_LIMIT_EXCEEDED_TOTAL.labels(server, "blocked").inc()
                return Decision(allowed=False, retry_after=blocked_for, blocked=True)
            for item in items:
                if self.limiter.hit(item, scope, identity):
                    continue
                stats = self.limiter.get_window_stats(item, scope, identity)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                RATE_LIMIT_EXCEEDED_TOTAL.labels(server, scope).inc()
                blocked_for = self._note_violation(identity)
                if blocked_for > 0:
                    return Decision(allowed=False, retry_after=blocked_for, blocked=True)
                return Decision(allowed=False, retry_after=retry_after)
        except _STORAGE_ERRORS as exc:
            self._down_until = time.monotonic() + STORAGE_RETRY_INTERVAL
            RATE_LIMIT_STORAGE_ERRORS_TOTAL.labels(server).inc()
            log.warning(
                "rate_limit_storage_unavailable",
                error=f"{type(exc).__name__}: {exc}",
                server=server,
            )
        return ALLOWED

    def close(self) -> None:
        if isinstance(self.storage, RedisStorage):
            cast(Any, self.storage.get_connection()).close()

    # ------------------------------------------------------------------ block list

    def _redis(self) -> Any | None:
        if isinstance(self.storage, RedisStorage):
            return self.storage.get_connection()
        return None

    def _key(self, kind: str, identity: str) -> str:
        return f"{self.key_prefix}:{kind}:{identity}"

    def _blocked_seconds(self, identity: str) -> int:
        redis = self._redis()
        if redis is None:
            return 0
        ttl = int(redis.ttl(self._key("blocked", identity)))
        return max(ttl, 0)

    def _note_violation(self, identity: str) -> int:
        """Count a 429 for `identity`; block it when it reaches the threshold. Block seconds or 0."""
        redis = self._redis()
        threshold = int(_setting("RATE_LIMIT_BLOCK_AFTER_VIOLATIONS") or 0)
        if redis is None or threshold <= 0:
            return 0
        window = max(1, int(_setting("RATE_LIMIT_BLOCK_WINDOW_SECONDS") or 1))
        counter = self._key("violations", identity)
        pipe = redis.pipeline(transaction=True)
        pipe.incr(counter)
        pipe.expire(counter, window, nx=True)
        count = int(pipe.execute()[0])
        if count < threshold:
            return 0
        seconds = max(1, int(_setting("RATE_LIMIT_BLOCK_SECONDS") or 1))
        pipe = redis.pipeline(transaction=True)
        pipe.set(self._key("blocked", identity), "1", ex=seconds)
        pipe.delete(counter)
        pipe.execute()
        log.warning("rate_limit_client_blocked", identity=identity, seconds=seconds)
        return seconds


# ---------------------------------------------------------------------- process-wide instance

_lock = threading.Lock()
_limiter: RequestRateLimiter | None = None
_overrides: dict[str, Any] = {}


def get_rate_limiter() -> RequestRateLimiter:
    """The process's limiter, created on first use from `REDIS_URL` (or the last reset's arguments)."""
    global _limiter
    if _limiter is None:
        with _lock:
            if _limiter is None:
                _limiter = RequestRateLimiter(**_overrides)
    return _limiter


def reset_rate_limiter(storage_url: str | None = None, *, key_prefix: str | None = None) -> None:
    """Drop the process's limiter; the next request builds one with these arguments (tests)."""
    global _limiter
    with _lock:
        old, _limiter = _limiter, None
        _fallback_until.clear()
        _overrides.clear()
        if storage_url is not None:
            _overrides["storage_url"] = storage_url
        if key_prefix is not None:
            _overrides["key_prefix"] = key_prefix
    if old is not None:
        try:
            old.close()
        except Exception as exc:
            log.debug("rate_limit_close_failed", error=str(exc))


# ---------------------------------------------------------------------- keys


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"


def _principal_key(user_id: object, role: object) -> str:
    return f"principal:{role}:{user_id}" if role else f"principal:{user_id}"


def _token_principal(headers: Headers) -> str | None:
    """The bearer token's user if the token verifies (the middleware runs before auth)."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    from jivapay import security

    decode = getattr(security, "decode_access_token", None)
    if decode is None:
        return None
    try:
        claims = decode(token.strip())
    except Exception:
        return None
    if isinstance(claims, dict):
        user_id, role = claims.get("sub"), claims.get("role")
    else:
        user_id = getattr(claims, "user_id", None) or getattr(claims, "sub", None)
        role = getattr(claims, "role", None)
    return _principal_key(user_id, role) if user_id not in (None, "") else None


def _store_key(headers: Headers) -> str | None:
    api_key = headers.get("x-api-key", "").strip()
    return f"store:{_digest(api_key)}" if api_key else None


def default_identity(scope: Scope) -> str:
    """Who the default limit counts: token subject, else store API key, else client IP."""
    headers = Headers(scope=scope)
    return _token_principal(headers) or _store_key(headers) or _client_ip(scope)


def _principal_identity(request: Request) -> str | None:
    principal = getattr(request.state, "principal", None)
    user_id = getattr(principal, "user_id", None)
    if user_id is not None:
        return _principal_key(user_id, getattr(principal, "role", None))
    return _token_principal(request.headers)


def identity_for(request: Request, kind: KeyKind) -> str:
    if kind is KeyKind.PRINCIPAL:
        return _principal_identity(request) or _client_ip(request.scope)
    if kind is KeyKind.STORE:
        return _store_key(request.headers) or _client_ip(request.scope)
    return _client_ip(request.scope)


def _server_of(request: Request) -> str:
    return str(getattr(request.app.state, "server_name", "unknown"))


# ---------------------------------------------------------------------- FastAPI dependency


def rate_limit(setting_key: str, key: KeyKind | str = KeyKind.IP) -> Callable[[Request], None]:
    """A dependency enforcing the limit in setting `setting_key`, keyed by IP, principal or store."""
    get_spec(setting_key)  # an unknown setting fails at import time, not on the first request
    kind = KeyKind(key)

    def enforce_rate_limit(request: Request) -> None:
        decision = get_rate_limiter().check(
            setting_key,
            identity_for(request, kind),
            scope=setting_key,
            server=_server_of(request),
        )
        if not decision.allowed:
            raise decision.error()

    enforce_rate_limit.__name__ = f"rate_limit_{setting_key.lower()}"
    return enforce_rate_limit


# ---------------------------------------------------------------------- ASGI middleware


class RateLimitMiddleware:
    """Applies `RATE_LIMIT_DEFAULT` to every request except the exempt paths (pure ASGI)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        server: str,
        setting_key: str = DEFAULT_SETTING,
        exempt_paths: frozenset[str] = EXEMPT_PATHS,
    ) -> None:
        get_spec(setting_key)
        self.app = app
        self.server = server
        self.setting_key = setting_key
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        identity = default_identity(scope)
        # The check is blocking I/O (Redis, and the settings cache on a miss): keep it off the loop.
        decision = await anyio.to_thread.run_sync(self._check, identity)
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        error = decision.error()
        state = scope.get("state") or {}
        response = problem_response(
            status=error.status_code,
            code=error.code,
            title=error.title,
            detail=error.message,
            instance=scope.get("path"),
            headers={"Retry-After": str(decision.retry_after)},
            request_id=state.get("request_id"),
            retry_after=decision.retry_after,
        )
        await response(scope, receive, send)

    def _check(self, identity: str) -> Decision:
        return get_rate_limiter().check(
            self.setting_key, identity, scope="default", server=self.server
        )

    def _exempt(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path in self.exempt_paths
