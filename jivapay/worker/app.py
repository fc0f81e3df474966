"""The Celery application: broker and result backend from settings, JSON only, one engine per process.

Configuration is lazy (`add_defaults` with a callable): importing this module neither reads the
environment nor connects anywhere, so tests and `jivapay up` can set `REDIS_URL` first. Tasks are
named `area.action` and acknowledged late: a task in flight when its worker dies is redelivered, so
every task must be idempotent (the database is the truth and the sweepers catch what is left).
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init, worker_process_init

TASK_MODULES = [
    "jivapay.worker.tasks",
    "jivapay.worker.callback_tasks",
    "jivapay.worker.reference_tasks",
]
# Without REDIS_URL Celery would fall back to AMQP and fail with a confusing error; point at the
# conventional local Redis instead.
FALLBACK_BROKER_URL = "redis://127.0.0.1:6379/0"


def celery_config() -> dict[str, Any]:
    """The Celery settings of this process, read from the environment when first needed."""
    from jivapay.config import get_settings
    from jivapay.worker.scheduler import BEAT_SCHEDULE

    settings = get_settings()
    return {
        "broker_url": settings.celery_broker_url or FALLBACK_BROKER_URL,
        "result_backend": settings.celery_result_backend or FALLBACK_BROKER_URL,
        "task_default_queue": settings.CELERY_TASK_QUEUE,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "result_expires": 24 * 3600,
        "timezone": "UTC",
        "enable_utc": True,
        # `configure_logging` owns logging: no Celery handler on the root logger, no stdout capture.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "beat_schedule": BEAT_SCHEDULE,
    }


celery_app = Celery("jivapay", include=TASK_MODULES)
celery_app.add_defaults(celery_config)


def _init_observability(process: str) -> None:
    try:
        from jivapay.utils.logging import configure_logging
    except ImportError:  # pragma: no cover - the logging module ships with the package
        pass
    else:
        configure_logging(process)
    from jivapay.utils.notifications import init_sentry

    init_sentry(process)


@setup_logging.connect
def _on_setup_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from installing its own handlers. It fires after
    # `worker_init`, so it names the process itself.
    _init_observability("beat" if "beat" in sys.argv else "worker")


@worker_init.connect
def _on_worker_init(**_: Any) -> None:
    _init_observability("worker")


# Task counters and durations: connects Celery's task signals (`jivapay.worker.metrics`).
from jivapay.worker import metrics as _metrics  # noqa: E402, F401


@beat_init.connect
def _on_beat_init(**_: Any) -> None:
    _init_observability("beat")


@worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # A forked pool process must not share the parent's pooled connections.
    from jivapay.database.engine import dispose_engine

    dispose_engine()
    _init_observability("worker")
