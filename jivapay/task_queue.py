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
        # A publish with the broker down fails at its first connection attempt instead of
        # reconnecting for `broker_connection_timeout` plus back-off (6 s a publish): the senders
        # are requests and sweeps, and the database keeps what was not sent. The worker's own
        # consumer connection retries by `broker_connection_max_retries`, not by this.
        "broker_transport_options": {"max_retries": 0},
        "result_expires": 24 * 3600,
        "timezone": "UTC",
        "enable_utc": True,
        # `configure_logging` owns logging: no Celery handler on the root logger, no stdout capture.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }


celery_app = Celery("jivapay")
celery_app.add_defaults(celery_config)


# One try, and no subscription to the result backend: nobody waits for these results, and with
# Redis down that subscription alone retried for 19 s inside the sender.
PUBLISH_ONCE: dict[str, Any] = {"retry": False, "ignore_result": True}


def send_task(name: str, *args: Any, **options: Any) -> None:
    """Publish task `name` (a `task_names` constant) with positional `args`; `options` as Celery's."""
    celery_app.send_task(name, args=list(args), **options)
