"""The Celery worker: the shared application object of `task_queue` plus its tasks and beat schedule.

Configuration is lazy (`add_defaults` with a callable): importing this module neither reads the
environment nor connects anywhere, so tests and `jivapay up` can set `REDIS_URL` first. Tasks are
named `area.action` and acknowledged late: a task in flight when its worker dies is redelivered, so
every task must be idempotent (the database is the truth and the sweepers catch what is left).
"""

from __future__ import annotations

import sys
from typing import Any

from celery.signals import beat_init, setup_logging, worker_init, worker_process_init

from jivapay.task_queue import FALLBACK_BROKER_URL, celery_app, celery_config

__all__ = ["FALLBACK_BROKER_URL", "TASK_MODULES", "celery_app", "celery_config", "worker_config"]

TASK_MODULES = [
    "jivapay.worker.tasks",
    "jivapay.worker.callback_tasks",
    "jivapay.worker.reference_tasks",
]


def worker_config() -> dict[str, Any]:
    """What only the worker and beat need on top of `task_queue.celery_config`: tasks and schedule."""
    from jivapay.worker.scheduler import BEAT_SCHEDULE

    return {"include": TASK_MODULES, "beat_schedule": BEAT_SCHEDULE}


celery_app.add_defaults(worker_config)


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
