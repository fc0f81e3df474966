"""Redis clients for caches and counters (reference-data cache, fraud velocity counters).

One client per URL per process, with short timeouts and no retries: a Redis that is down must cost
a caller a fraction of a second and a logged fallback, never a hung request. Keys live under
`namespace()`, which names the database, so two deployments (or two test runs) sharing one Redis
never read each other's cached rows or counters.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.engine import make_url

from jivapay.config import get_settings
from jivapay.utils.exceptions import ConfigurationError

SOCKET_TIMEOUT_SECONDS = 0.5
# What a caller catches to fall back to the database: connection refused, timeouts, protocol errors.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def get_redis(url: str | None = None) -> redis.Redis:
    """The process's client for `url` (default `REDIS_URL`), answering `str` values."""
    target = url or get_settings().REDIS_URL
    if not target:
        raise ConfigurationError("REDIS_URL is not set")
    with _lock:
        client = _clients.get(target)
        if client is None:
            client = _clients[target] = redis.Redis.from_url(
                target,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),
            )
        return client


@lru_cache(maxsize=8)
def _database_name(database_url: str | None) -> str:
    if not database_url:
        return "default"
    try:
        return make_url(database_url).database or "default"
    except Exception:  # a malformed URL fails elsewhere, loudly; here any stable name does
        return "default"


def namespace() -> str:
    """The key prefix of this deployment's cache and counters: `jivapay:<database name>`."""
    return f"jivapay:{_database_name(get_settings().DATABASE_URL)}"
