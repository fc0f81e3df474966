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
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

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


# --------------------------------------------------------------------------- Celery tasks
# Recorded by the worker's signal handlers (`jivapay.worker.metrics`). `state` is Celery's final
# state of the run: SUCCESS, FAILURE, RETRY (the run raised Retry: a new run follows) or REJECTED.

CELERY_TASKS_TOTAL = Counter(
    "celery_tasks_total", "Celery task runs finished, by task name and state.", ("task", "state")
)
CELERY_TASK_DURATION_SECONDS = Histogram(
    "celery_task_duration_seconds",
    "Wall time of one Celery task run, by task name and state.",
    ("task", "state"),
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
CELERY_TASK_RETRIES_TOTAL = Counter(
    "celery_task_retries_total", "Celery task retries scheduled, by task name.", ("task",)
)

# --------------------------------------------------------------------------- business events
# Counted after the owning transaction commits (`call_after_commit`) or once a task's own
# transaction is done, so a rolled-back attempt is never counted.

INTAKE_ORDERS_TOTAL = Counter(
    "jivapay_intake_orders_total",
    "Intake processing attempts, by outcome (assigned, retrying, failed, manual_review, skipped).",
    ("outcome",),
)
ASSIGNMENT_LATENCY_SECONDS = Histogram(
    "jivapay_assignment_latency_seconds",
    "From an intake order's creation to its assignment to a trader's requisite, by order type.",
    ("order_type",),
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
)
ORDER_TRANSITIONS_TOTAL = Counter(
    "jivapay_order_transitions_total",
    "Order status changes committed, by previous and new status.",
    ("from_status", "to_status"),
)
FRAUD_DECISIONS_TOTAL = Counter(
    "jivapay_fraud_decisions_total",
    "Fraud checks that fired, by rule, outcome (block, review) and stage.",
    ("rule", "outcome", "stage"),
)
CALLBACK_ATTEMPTS_TOTAL = Counter(
    "jivapay_callback_attempts_total",
    "Merchant callback delivery attempts, by result (delivered, pending = will retry, failed, disabled).",
    ("result",),
)
RECONCILIATION_DISCREPANCIES = Gauge(
    "jivapay_reconciliation_discrepancies",
    "Money invariants broken at the last reconciliation run (0 when all hold).",
    multiprocess_mode="mostrecent",
)
RECONCILIATION_RUNS_TOTAL = Counter(
    "jivapay_reconciliation_runs_total", "Reconciliation runs completed.", ()
)


def multiprocess_dir() -> str | None:
    """`PROMETHEUS_MULTIPROC_DIR` when this process shares metrics with siblings (prefork, uvicorn)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def collecting_registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process's registry."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)
    return registry


def render_latest() -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, with its content type."""
    return generate_latest(collecting_registry()), CONTENT_TYPE_LATEST
