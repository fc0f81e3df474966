"""Rate limiting on every server, on top of the `limits` library and Redis (sliding window counters).

Who is counted, and against which limit:

- A request whose bearer token verifies counts against `RATE_LIMIT_DEFAULT` per principal (below).
- A gateway route that authenticates the store (`get_current_store`) is counted only once the
  signature verifies: `RATE_LIMIT_GATEWAY` per store on every such route, and intake additionally
  `RATE_LIMIT_GATEWAY_INIT` per store. A request that fails store authentication counts against
  `RATE_LIMIT_DEFAULT` by client IP instead, so a stranger knowing a store's public key cannot use up
  the store's quota. `X-API-Key` is never an identity before it verifies. The gateway limit and the
  route's own store limits are counted together, in one Redis round trip (`check_many`).
- Everything else (no valid credentials) counts against `RATE_LIMIT_DEFAULT` by client IP.
- Login: `RATE_LIMIT_LOGIN` per IP on every attempt, and per account on failed attempts: an account
  whose failures reach the limit is refused (429) before its password is checked. The account's
  count is taken (atomically, in Redis) before the password is checked and given back when the
  login succeeds, so attempts running at once count as failures until they have answered: parallel
  guesses cannot all reach the password check before the first failure is counted.
- Only unauthenticated callers are ever blocked: an IP whose requests fail authentication (401,
  a revoked or otherwise refused token included) more than `RATE_LIMIT_BLOCK_AFTER_VIOLATIONS`
  times within `RATE_LIMIT_BLOCK_WINDOW_SECONDS` is refused (`client_blocked`) for
  `RATE_LIMIT_BLOCK_SECONDS` whenever it comes without valid credentials (a well-signed token is
  only found revoked by the route, which answers 401, counted again). A store or user with valid
  credentials is limited (429) but never blocked, on every route (the IP limits of a route whose
  guard has authenticated its user are not blockable).

A token's principal is its user, role and token version (`ver`): a revoked token (its version
behind the user's, after a password change or reset) is still well signed, so the middleware, which
does not read the database, counts it, but in a bucket of its own, never in the one of its owner's
fresh tokens.

The client IP is `scope["client"]`: uvicorn rewrites it from `X-Forwarded-For` only for the proxies
listed in the `TRUSTED_PROXIES` environment setting (`jivapay serve`). An IPv6 client is counted (and
blocked) by its /64 network, the smallest block a site is routed and whose addresses one host can
pick freely; an IPv4 client, or an IPv4-mapped IPv6 address, by its IPv4 address.

Every limited response carries the IETF `RateLimit-Policy` and `RateLimit` fields
(draft-ietf-httpapi-ratelimit-headers: `"default";q=600;w=60` and `"default";r=598;t=42`); a 429 is
problem+json (`rate_limited` or `client_blocked`) with `Retry-After`.

Limits are DB settings read live through `config_loader` (cached ~5 s). The storage only uses
commands Redis 6.2 has (the `limits` sliding-window scripts and ours, `SET EX`, `TTL`), so the embedded Redis
works too. Redis down: requests are served (fail open), a warning is logged,
`rate_limit_storage_errors_total` counts it and `/ready` reports `rate_limiter` failing; the storage
is not retried for a second, so a dead Redis costs at most one short timeout per second.
`/health`, `/ready` and `/metrics` are exempt.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import json
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, TypeVar, cast

import anyio.to_thread
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.errors import StorageError as LimitsStorageError
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jivapay.config import Environment, get_settings
from jivapay.enums import KeyKind
from jivapay.servers.exception_handlers import problem_response
from jivapay.utils.config_loader import get_spec, get_typed_config_value
from jivapay.utils.exceptions import AuthenticationFailed, ConfigurationError, RateLimited
from jivapay.utils.metrics import RATE_LIMIT_EXCEEDED_TOTAL, RATE_LIMIT_STORAGE_ERRORS_TOTAL

log = structlog.get_logger(__name__)

DEFAULT_SETTING = "RATE_LIMIT_DEFAULT"
GATEWAY_SETTING = "RATE_LIMIT_GATEWAY"
LOGIN_SETTING = "RATE_LIMIT_LOGIN"
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
STORAGE_SOCKET_TIMEOUT = 0.2
# After a storage failure, checks are skipped this long instead of paying a timeout per request.
STORAGE_RETRY_INTERVAL = 1.0
# `/ready` reports the limiter failing while its last storage error is this recent.
STORAGE_ERROR_MEMORY_SECONDS = 30.0
SETTING_FALLBACK_SECONDS = 5.0
QUOTAS_STATE = "rate_limit_quotas"
_T = TypeVar("_T")
_STORAGE_ERRORS: tuple[type[Exception], ...] = (RedisError, LimitsStorageError, OSError)


class ClientBlocked(RateLimited):
    """An unauthenticated client that kept failing authentication is refused for a while."""

    code = "client_blocked"
    title = "Client temporarily blocked"


@dataclass(frozen=True)
class Quota:
    """One limit as the client sees it: the IETF `RateLimit-Policy`/`RateLimit` items."""

    policy: str
    limit: int
    window: int
    remaining: int
    reset: int

    def policy_item(self) -> str:
        return f'"{self.policy}";q={self.limit};w={self.window}'

    def limit_item(self) -> str:
        return f'"{self.policy}";r={self.remaining};t={self.reset}'


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    blocked: bool = False
    quotas: tuple[Quota, ...] = field(default=())

    def error(self) -> RateLimited:
        if self.blocked:
            return ClientBlocked(
                f"Too many failed authentications; blocked for {self.retry_after} s",
                retry_after=self.retry_after,
            )
        return RateLimited(
            f"Rate limit exceeded; retry in {self.retry_after} s", retry_after=self.retry_after
        )


ALLOWED = Decision(allowed=True)


# Several sliding-window hits in one round trip, each followed by its window's counts: the
# `limits` scripts `acquire_sliding_window.lua` then `sliding_window.lua` run per item, in order,
# on the same keys, stopping after the first refusal (a refused limit leaves the later ones
# uncounted, as one `hit` after another would). ARGV: amount, then limit and expiry per item.
_HIT_MANY_SCRIPT = """
local amount = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 2 do
    local previous_key, current_key = KEYS[2 * i - 1], KEYS[2 * i]
    local limit = tonumber(ARGV[2 * i])
    local expiry = tonumber(ARGV[2 * i + 1]) * 1000
    local acquired = 0
    if amount <= limit then
        local current_ttl = tonumber(redis.call('pttl', current_key))
        if current_ttl > 0 and current_ttl < expiry then
            redis.call('rename', current_key, previous_key)
            redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
        end
        local previous_count = tonumber(redis.call('get', previous_key)) or 0
        local previous_ttl = tonumber(redis.call('pttl', previous_key)) or 0
        local current_count = tonumber(redis.call('get', current_key)) or 0
        current_ttl = tonumber(redis.call('pttl', current_key)) or 0
        if previous_ttl <= 0 then previous_ttl = 0 end
        if current_ttl <= 0 then current_ttl = 0 end
        local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count
        if weighted + amount <= limit then
            acquired = 1
            if redis.call('exists', current_key) == 1 then
                redis.call('incrby', current_key, amount)
            else
                redis.call('set', current_key, amount, 'PX', expiry * 2)
            end
        end
    end
    local current_ttl = redis.call('pttl', current_key)
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
    end
    out[i] = {
        acquired,
        redis.call('get', previous_key) or 0,
        redis.call('pttl', previous_key),
        redis.call('get', current_key) or 0,
        redis.call('pttl', current_key),
    }
    if acquired == 0 then
        return out
    end
end
return out
"""


# One hit given back to each sliding window (KEYS: previous and current key per window): taken from
# the current window's count, or from the previous one's when the window has moved on since the hit
# (the `limits` scripts rename the current key to the previous one). `DECR` keeps the key's TTL.
_GIVE_BACK_SCRIPT = """
for i = 1, #KEYS / 2 do
    local previous_key, current_key = KEYS[2 * i - 1], KEYS[2 * i]
    if (tonumber(redis.call('get', current_key)) or 0) > 0 then
        redis.call('decr', current_key)
    elseif (tonumber(redis.call('get', previous_key)) or 0) > 0 then
        redis.call('decr', previous_key)
    end
end
return 0
"""


def _refused(server: str, scope: str, quotas: list[Quota]) -> Decision:
    """The refusal of the last quota in `quotas` (counted in the metrics)."""
    RATE_LIMIT_EXCEEDED_TOTAL.labels(server, scope).inc()
    return Decision(allowed=False, retry_after=max(1, quotas[-1].reset), quotas=tuple(quotas))


def _window_quota(item: RateLimitItem, scope: str, window: tuple[int, float, int, float]) -> Quota:
    """The client's view of a sliding window from its counts (previous count, seconds it still
    weighs, current count, seconds the current counter lives): `limits`' `get_window_stats`."""
    previous_count, previous_expires_in, current_count, current_expires_in = window
    expiry = item.get_expiry()
    weighted = previous_count * previous_expires_in / expiry + current_count
    reset_in = 0.0
    if previous_count or current_count:
        previous_reset_in = (
            previous_expires_in % (expiry / previous_count) if previous_count else math.inf
        )
        current_reset_in = current_expires_in % expiry if current_count else math.inf
        reset_in = min(previous_reset_in, current_reset_in)
    return Quota(
        policy=scope,
        limit=item.amount,
        window=expiry,
        remaining=max(0, item.amount - math.floor(weighted)),
        reset=max(0, math.ceil(reset_in)),
    )


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
    """The process's limiter: a `limits` storage, sliding window counters and the IP block list."""

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
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self._hit_many: Any | None = None  # the registered `_HIT_MANY_SCRIPT`, on first use
        self._give_back: Any | None = None  # the registered `_GIVE_BACK_SCRIPT`, on first use
        self._down_until = 0.0
        self.last_storage_error: tuple[float, str] | None = None

    # ------------------------------------------------------------------ public

    def check(
        self,
        setting_key: str,
        identity: str,
        *,
        scope: str,
        server: str,
        blockable: bool = False,
    ) -> Decision:
        """Count one request of `identity` against `setting_key`'s limits; fail open on errors.

        `blockable` identities (unauthenticated IPs) are refused first while on the block list.
        """
        return self._guarded(
            server, lambda: self._check(setting_key, identity, scope, server, blockable)
        )

    def check_many(self, checks: Sequence[tuple[str, str, str]], *, server: str) -> Decision:
        """Count one request against several `(setting_key, identity, scope)` limits in order, as
        `check` one after another would (the first refusal stops the counting), in one Redis
        round trip; fail open on errors."""
        return self._guarded(server, lambda: self._check_many(checks, server))

    def note_auth_failure(self, identity: str, *, server: str) -> int:
        """Count a failed authentication of an unauthenticated `identity`; block seconds or 0."""
        return self._guarded(server, lambda: self._note_auth_failure(identity), default=0)

    def blocked_seconds(self, identity: str, *, server: str) -> int:
        """Seconds `identity` stays blocked (0: not blocked, or the storage is down)."""
        return self._guarded(server, lambda: self._blocked_seconds(identity), default=0)

    def give_back(self, setting_key: str, identity: str, *, scope: str, server: str) -> None:
        """Uncount one request `check` counted (a login that succeeded after all), in one round
        trip; nothing when the storage fails."""
        self._guarded(
            server, lambda: self._give_back_hit(setting_key, identity, scope), default=None
        )

    def probe(self) -> None:
        """Exercise every storage operation the limiter uses; raises when one fails (`/ready`)."""
        item = RateLimitItemPerSecond(1_000_000, 60)
        self.limiter.hit(item, "probe", "ready")
        self.limiter.get_window_stats(item, "probe", "ready")
        redis = self._redis()
        if redis is not None:
            key = self._key("probe", "ready")
            redis.set(key, "1", ex=60)
            redis.ttl(key)

    def storage_failing(self) -> str | None:
        """The last storage error if it is recent, else None."""
        if self.last_storage_error is None:
            return None
        at, error = self.last_storage_error
        return error if time.monotonic() - at < STORAGE_ERROR_MEMORY_SECONDS else None

    def close(self) -> None:
        if isinstance(self.storage, RedisStorage):
            cast(Any, self.storage.get_connection()).close()

    # ------------------------------------------------------------------ internals

    def _guarded(self, server: str, action: Callable[[], _T], default: Any = ALLOWED) -> _T:
        if time.monotonic() < self._down_until:
            return cast(_T, default)
        try:
            return action()
        except _STORAGE_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._down_until = time.monotonic() + STORAGE_RETRY_INTERVAL
            self.last_storage_error = (time.monotonic(), error)
            RATE_LIMIT_STORAGE_ERRORS_TOTAL.labels(server).inc()
            log.warning("rate_limit_storage_unavailable", error=error, server=server)
            return cast(_T, default)

    def _quota(self, item: RateLimitItem, scope: str, identity: str) -> Quota:
        storage = cast(Any, self.storage)
        window = storage.get_sliding_window(item.key_for(scope, identity), item.get_expiry())
        return _window_quota(item, scope, window)

    def _check_many(self, checks: Sequence[tuple[str, str, str]], server: str) -> Decision:
        if not isinstance(self.storage, RedisStorage):
            return self._check_in_turn(checks, server)
        items = [
            (item, scope, item.key_for(scope, identity))
            for setting_key, identity, scope in checks
            for item in _limits_for(setting_key)
        ]
        storage = self.storage
        keys: list[str] = []
        args: list[int] = [1]
        for item, _, key in items:
            keys += [
                storage.prefixed_key(storage._previous_window_key(key)),
                storage.prefixed_key(storage._current_window_key(key)),
            ]
            args += [item.amount, item.get_expiry()]
        if self._hit_many is None:
            self._hit_many = storage.get_connection().register_script(_HIT_MANY_SCRIPT.encode())
        quotas = []
        for (item, scope, _), row in zip(items, self._hit_many(keys, args), strict=False):
            acquired, previous, previous_ttl, current, current_ttl = row
            window = (
                int(previous or 0),
                max(0, float(previous_ttl or 0)) / 1000,
                int(current or 0),
                max(0, float(current_ttl or 0)) / 1000,
            )
            quota = _window_quota(item, scope, window)
            quotas.append(quota)
            if not acquired:
                return _refused(server, scope, quotas)
        return Decision(allowed=True, quotas=tuple(quotas))

    def _check_in_turn(self, checks: Sequence[tuple[str, str, str]], server: str) -> Decision:
        quotas: list[Quota] = []
        for setting_key, identity, scope in checks:
            decision = self._check(setting_key, identity, scope, server, False)
            quotas += decision.quotas
            if not decision.allowed:
                return Decision(
                    allowed=False, retry_after=decision.retry_after, quotas=tuple(quotas)
                )
        return Decision(allowed=True, quotas=tuple(quotas))

    def _check(
        self, setting_key: str, identity: str, scope: str, server: str, blockable: bool
    ) -> Decision:
        if blockable:
            blocked_for = self._blocked_seconds(identity)
            if blocked_for > 0:
                RATE_LIMIT_EXCEEDED_TOTAL.labels(server, "blocked").inc()
                return Decision(allowed=False, retry_after=blocked_for, blocked=True)
        quotas = []
        for item in _limits_for(setting_key):
            allowed = self.limiter.hit(item, scope, identity)
            quotas.append(self._quota(item, scope, identity))
            if not allowed:
                return _refused(server, scope, quotas)
        return Decision(allowed=True, quotas=tuple(quotas))

    def _give_back_hit(self, setting_key: str, identity: str, scope: str) -> None:
        items = _limits_for(setting_key)
        storage = self.storage
        if isinstance(storage, RedisStorage):
            keys: list[str] = []
            for item in items:
                key = item.key_for(scope, identity)
                keys += [
                    storage.prefixed_key(storage._previous_window_key(key)),
                    storage.prefixed_key(storage._current_window_key(key)),
                ]
            if self._give_back is None:
                self._give_back = storage.get_connection().register_script(
                    _GIVE_BACK_SCRIPT.encode()
                )
            self._give_back(keys, [])
        elif isinstance(storage, MemoryStorage):
            for item in items:
                previous, current = storage.sliding_window_keys(
                    item.key_for(scope, identity), item.get_expiry(), time.time()
                )
                for key in (current, previous):
                    if storage.get(key) > 0:
                        storage.decr(key)
                        break

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
        return max(int(redis.ttl(self._key("blocked", identity))), 0)

    def _note_auth_failure(self, identity: str) -> int:
        redis = self._redis()
        threshold = int(_setting("RATE_LIMIT_BLOCK_AFTER_VIOLATIONS") or 0)
        if redis is None or threshold <= 0:
            return 0
        window = max(1, int(_setting("RATE_LIMIT_BLOCK_WINDOW_SECONDS") or 1))
        if self.limiter.hit(RateLimitItemPerSecond(threshold, window), "auth_failures", identity):
            return 0
        seconds = max(1, int(_setting("RATE_LIMIT_BLOCK_SECONDS") or 1))
        redis.set(self._key("blocked", identity), "1", ex=seconds)
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


def limiter_health() -> None:
    """Raise when the limiter's storage fails now or failed recently (`/ready`, `jivapay up`)."""
    limiter = get_rate_limiter()
    recent = limiter.storage_failing()
    limiter.probe()
    if recent is not None:
        raise RuntimeError(f"rate limiter storage failed recently: {recent}")


# ---------------------------------------------------------------------- keys


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _client_ip(scope: Scope) -> str:
    """The limiter identity of the client's address (`address_identity`)."""
    client = scope.get("client")
    return address_identity(client[0]) if client else "ip:unknown"


# An IPv6 site is routed at least a /64 and its hosts pick addresses in it at will (privacy
# addresses), so one caller is one /64; a longer prefix is no barrier at all.
IPV6_PREFIX = 64


@lru_cache(maxsize=4096)
def address_identity(host: str) -> str:
    """The limiter (and block list) identity of a client address: `ip:<IPv4>`, `ip:<IPv6 /64>`
    (an IPv4-mapped IPv6 address counts as its IPv4), `ip:<host>` for what is no address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"ip:{host}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False)}"
    return f"ip:{address}"


def _principal_key(user_id: object, role: object) -> str:
    return f"principal:{role}:{user_id}" if role else f"principal:{user_id}"


def store_identity(store_id: object) -> str:
    """The limiter identity of an authenticated store."""
    return f"store:{store_id}"


def account_identity(login: str) -> str:
    """The limiter identity of a login name (case-insensitive, never stored in clear)."""
    return f"account:{_digest(login.strip().lower())}"


def _token_principal(headers: Headers) -> str | None:
    """The bearer token's user and token version if the token verifies (the middleware runs before
    auth and does not read the database: a revoked token verifies here, and its version keeps it
    out of the bucket of its owner's current tokens)."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    from jivapay.security import decode_access_token

    try:
        claims = decode_access_token(token.strip())
    except Exception:
        return None
    return f"{_principal_key(claims.user_id, claims.role)}:v{claims.token_version}"


def default_identity(scope: Scope) -> str:
    """Who the default limit counts: the verified token's subject, else the client IP."""
    return _token_principal(Headers(scope=scope)) or _client_ip(scope)


def _server_of(request: Request) -> str:
    return str(getattr(request.app.state, "server_name", "unknown"))


def _record(scope: Scope, decision: Decision) -> None:
    if decision.quotas:
        scope.setdefault("state", {}).setdefault(QUOTAS_STATE, []).extend(decision.quotas)


def _enforce(
    request: Request, setting_key: str, identity: str, *, scope: str, blockable: bool = False
) -> None:
    server = _server_of(request)
    decision = get_rate_limiter().check(
        setting_key, identity, scope=scope, server=server, blockable=blockable
    )
    _record(request.scope, decision)
    if not decision.allowed:
        raise decision.error()


# ---------------------------------------------------------------------- store authentication hooks


STORE_LIMITS_COUNTED_STATE = "store_limits_counted"


def _route_store_limits(request: Request) -> tuple[str, ...]:
    """The settings of the `rate_limit(..., key=STORE)` dependencies of the request's route."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return ()
    cached: tuple[str, ...] | None = getattr(route, "_jivapay_store_limits", None)
    if cached is None:
        found: list[str] = []
        stack = [dependant]
        while stack:
            current = stack.pop()
            setting = getattr(current.call, "store_limit_setting", None)
            if setting is not None and setting not in found:
                found.append(setting)
            stack.extend(reversed(current.dependencies))
        cached = tuple(found)
        route._jivapay_store_limits = cached  # type: ignore[union-attr]
    return cached


def store_authenticated(request: Request, store_id: object) -> None:
    """After a store's signature verified: count the request against `RATE_LIMIT_GATEWAY`, and
    against the store limits its route declares (`rate_limit(..., key=STORE)`), in one round trip.
    """
    identity = store_identity(store_id)
    extra = _route_store_limits(request)
    checks = [(GATEWAY_SETTING, identity, "gateway")]
    checks += [(key, identity, _scope_name(key)) for key in extra]
    decision = get_rate_limiter().check_many(checks, server=_server_of(request))
    _record(request.scope, decision)
    if not decision.allowed:
        raise decision.error()
    request.scope.setdefault("state", {})[STORE_LIMITS_COUNTED_STATE] = extra


def _scope_name(setting_key: str) -> str:
    return setting_key.removeprefix("RATE_LIMIT_").lower()


def store_authentication_failed(request: Request) -> None:
    """After store authentication failed: count by IP, note the failure; raise when refused."""
    identity = _client_ip(request.scope)
    server = _server_of(request)
    limiter = get_rate_limiter()
    blocked = limiter.blocked_seconds(identity, server=server)
    if blocked == 0:
        blocked = limiter.note_auth_failure(identity, server=server)
    if blocked > 0:
        raise Decision(allowed=False, retry_after=blocked, blocked=True).error()
    _enforce(request, DEFAULT_SETTING, identity, scope="default")


def store_route_unverified(request: Request) -> None:
    """A request to a store-signed route refused before its signature was checked (a body that
    does not parse, say): counted by IP like any caller without credentials, because the
    middleware leaves store routes to the signature check, which never ran; raises when refused.
    Blocking (a Redis round trip)."""
    if getattr(request.state, "authenticates_store", False) or not _authenticates_store(
        request.scope
    ):
        return
    _enforce(request, DEFAULT_SETTING, _client_ip(request.scope), scope="default", blockable=True)


# ---------------------------------------------------------------------- FastAPI dependencies


def rate_limit(setting_key: str, key: KeyKind | str = KeyKind.IP) -> Callable[..., Any]:
    """A dependency enforcing the limit in setting `setting_key`, keyed by IP, principal or store.

    `store` counts the authenticated store (it depends on `get_current_store`, so an unverified
    `X-API-Key` never reaches a store's quota).
    """
    get_spec(setting_key)  # an unknown setting fails at import time, not on the first request
    kind = KeyKind(key)
    scope_name = _scope_name(setting_key)

    if kind is KeyKind.STORE:
        from jivapay.api_routers.auth import get_current_store

        async def enforce_store_limit(request: Request, store: Any) -> None:
            # Usually counted already, with the gateway limit, by `store_authenticated`.
            counted = request.scope.get("state", {}).get(STORE_LIMITS_COUNTED_STATE, ())
            if setting_key not in counted:
                await anyio.to_thread.run_sync(
                    lambda: _enforce(
                        request, setting_key, store_identity(store.store_id), scope=scope_name
                    )
                )

        enforce_store_limit.store_limit_setting = setting_key  # type: ignore[attr-defined]

        enforce_store_limit.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(
                    "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
                ),
                inspect.Parameter(
                    "store",
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    annotation=Annotated[Any, Depends(get_current_store)],
                ),
            ]
        )
        enforce_store_limit.__name__ = f"rate_limit_{scope_name}"
        return enforce_store_limit

    def enforce_rate_limit(request: Request) -> None:
        principal = getattr(request.state, "principal", None)
        if kind is KeyKind.PRINCIPAL:
            identity = (
                _principal_key(principal.user_id, principal.role)
                if principal is not None
                else default_identity(request.scope)
            )
        else:
            identity = _client_ip(request.scope)
        # A user the route's guard has authenticated is limited, never blocked.
        blockable = kind is KeyKind.IP and principal is None
        _enforce(request, setting_key, identity, scope=scope_name, blockable=blockable)

    enforce_rate_limit.__name__ = f"rate_limit_{scope_name}"
    return enforce_rate_limit


async def _login_name(request: Request) -> str | None:
    """The account a login request names (form `username`, or JSON `email`), if readable."""
    # Media types are case-insensitive, and the form parser reads them so: the account must be
    # found whatever case the client sends, or its failures would go uncounted.
    content_type = request.headers.get("content-type", "").lower()
    try:
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            value = (await request.form()).get("username")
        else:
            body = json.loads(await request.body())
            value = body.get("email") if isinstance(body, dict) else None
    except Exception:
        return None
    return value if isinstance(value, str) and value.strip() else None


def login_rate_limit() -> Callable[[Request], AsyncIterator[None]]:
    """Login routes: `RATE_LIMIT_LOGIN` per IP on every attempt and per account on failures.

    The account's attempt is counted before its password is checked, in the same atomic Redis
    step that refuses it when the account has no quota left, and given back unless the login
    failed authentication: an attempt still running counts as a failure, so attempts sent at
    once cannot all pass the check before any has failed, and only failures stay counted."""
    get_spec(LOGIN_SETTING)

    async def enforce_login_limit(request: Request) -> AsyncIterator[None]:
        server = _server_of(request)
        await anyio.to_thread.run_sync(
            lambda: _enforce(request, LOGIN_SETTING, _client_ip(request.scope), scope="login")
        )
        login = await _login_name(request)
        if login is None:
            yield
            return
        account = account_identity(login)
        limiter = get_rate_limiter()
        # The account's quota is not shown in the RateLimit fields: its failures are no business
        # of whoever names it.
        decision = await anyio.to_thread.run_sync(
            lambda: limiter.check(LOGIN_SETTING, account, scope="login_failures", server=server)
        )
        if not decision.allowed:
            raise decision.error()
        failed = False
        try:
            yield
        except AuthenticationFailed:
            failed = True
            raise
        finally:
            if not failed:
                await anyio.to_thread.run_sync(
                    lambda: limiter.give_back(
                        LOGIN_SETTING, account, scope="login_failures", server=server
                    )
                )

    return enforce_login_limit


# ---------------------------------------------------------------------- ASGI middleware

STORE_ROUTES_STATE = "store_authenticated_routes"


def store_authenticated_routes(routers: Sequence[APIRouter]) -> tuple[APIRoute, ...]:
    """The routes of `routers` that authenticate a store by signature (`get_current_store`)."""
    from jivapay.api_routers.auth import get_current_store

    def uses_store_auth(route: APIRoute) -> bool:
        stack = [route.dependant]
        while stack:
            dependant = stack.pop()
            if dependant.call is get_current_store:
                return True
            stack.extend(dependant.dependencies)
        return False

    return tuple(
        route
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and uses_store_auth(route)
    )


def _authenticates_store(scope: Scope) -> bool:
    """Whether this request goes to a route that authenticates a store by signature."""
    state = getattr(scope.get("app"), "state", None)
    routes: Sequence[APIRoute] = getattr(state, STORE_ROUTES_STATE, ())
    return any(route.matches(scope)[0] is Match.FULL for route in routes)


def rate_limit_headers(quotas: list[Quota]) -> dict[str, str]:
    """The IETF `RateLimit-Policy` and `RateLimit` fields of the quotas a request used."""
    latest: dict[str, Quota] = {}
    for quota in quotas:
        latest[f"{quota.policy}/{quota.window}"] = quota
    if not latest:
        return {}
    return {
        "RateLimit-Policy": ", ".join(q.policy_item() for q in latest.values()),
        "RateLimit": ", ".join(q.limit_item() for q in latest.values()),
    }


class RateLimitMiddleware:
    """Counts each request before routing (principal or IP), except on store-signed gateway routes,
    which count once the signature verifies, or by IP when refused before it
    (`store_route_unverified`). Adds the `RateLimit` fields and notes every 401 against the
    client IP for the block list, a well-signed token's too (revoked, or its user disabled); a
    store route's are noted by `store_authentication_failed` (pure ASGI)."""

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
        state = scope.setdefault("state", {})
        quotas: list[Quota] = state.setdefault(QUOTAS_STATE, [])
        principal = _token_principal(Headers(scope=scope))
        unauthenticated_ip = None
        if principal is not None:
            decision = await anyio.to_thread.run_sync(self._check, principal, False)
        elif _authenticates_store(scope):
            decision = ALLOWED  # counted by `store_authenticated` / `store_authentication_failed`
        else:
            unauthenticated_ip = _client_ip(scope)
            decision = await anyio.to_thread.run_sync(self._check, unauthenticated_ip, True)
        quotas.extend(decision.quotas)
        if not decision.allowed:
            await self._refuse(scope, receive, send, decision, quotas)
            return

        failed_auth = False

        async def send_with_headers(message: Message) -> None:
            nonlocal failed_auth
            if message["type"] == "http.response.start":
                failed_auth = message["status"] == 401
                headers = MutableHeaders(scope=message)
                for name, value in rate_limit_headers(quotas).items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
        if failed_auth and not _authenticates_store(scope):
            # A 401 is no valid credential, whatever the request carried: counted like any failed
            # authentication (a store route counts its own, after the signature check).
            failing_ip = unauthenticated_ip or _client_ip(scope)
            await anyio.to_thread.run_sync(
                lambda: get_rate_limiter().note_auth_failure(failing_ip, server=self.server)
            )

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, decision: Decision, quotas: list[Quota]
    ) -> None:
        error = decision.error()
        state = scope.get("state") or {}
        response = problem_response(
            status=error.status_code,
            code=error.code,
            title=error.title,
            detail=error.message,
            instance=scope.get("path"),
            headers={"Retry-After": str(decision.retry_after), **rate_limit_headers(quotas)},
            request_id=state.get("request_id"),
            retry_after=decision.retry_after,
        )
        await response(scope, receive, send)

    def _check(self, identity: str, blockable: bool) -> Decision:
        return get_rate_limiter().check(
            self.setting_key, identity, scope="default", server=self.server, blockable=blockable
        )

    def _exempt(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path in self.exempt_paths
