"""Prometheus metrics of the API servers, defined once per process on the default registry.

Several servers may live in one process (tests, `jivapay up` in one interpreter), so every metric is
labelled by `server` instead of being created per app. Route labels are path templates
(`/merchant/orders/{order_id}`), never raw paths, to keep label cardinality bounded.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

HTTP_REQUESTS_TOTAL = Counter(
    "http_requests_total",
    "HTTP requests answered, by server, method, route template and status.",
    ("server", "method", "route", "status"),
)

HTTP_REQUEST_DURATION_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by server, method and route template.",
    ("server", "method", "route"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

RATE_LIMIT_STORAGE_ERRORS_TOTAL = Counter(
    "rate_limit_storage_errors_total",
    "Rate-limit checks skipped because the storage (Redis) failed; requests were served.",
    ("server",),
)

RATE_LIMIT_EXCEEDED_TOTAL = Counter(
    "rate_limit_exceeded_total",
    "Requests refused with 429, by server and limit scope (default, a setting key, blocked).",
    ("server", "scope"),
)


def metrics_registry() -> CollectorRegistry:
    """What to expose: with `PROMETHEUS_MULTIPROC_DIR` set (`serve --workers N`), the sum of every
    worker process's metrics; else this process's registry."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render_latest() -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, with its content type."""
    return generate_latest(metrics_registry()), CONTENT_TYPE_LATEST
