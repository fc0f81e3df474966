"""The Celery application object and the one function that sends a task by name.

This is the producer side of the queue, below `services`: it knows the broker, not the tasks.
`worker/app.py` takes this same object, adds the task modules and the beat schedule, and runs it,
so a change to its configuration (a test's queue, for instance) applies to senders and worker
alike. Configuration is lazy (`add_defaults` with a callable): importing this module neither reads
the environment nor connects anywhere.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

# Without REDIS_URL Celery would fall back to AMQP and fail with a confusing error; point at the
# conventional local Redis instead.
FALLBACK_BROKER_URL = "redis://127.0.0.1:6379/0"


def celery_config() -> dict[str, Any]:
    """The Celery settings of this process, read from the environment when first needed."""
    from jivapay.config import get_settings

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
    }


celery_app = Celery("jivapay")
celery_app.add_defaults(celery_config)


def send_task(name: str, *args: Any, **options: Any) -> None:
    """Publish task `name` (a `task_names` constant) with positional `args`; `options` as Celery's."""
    celery_app.send_task(name, args=list(args), **options)
