"""Re-sending what a sweeper found due: each id at most once per interval, and a sweep that stops
at the first failed publish.

A sweeper re-sends every due id it finds. When the queue is backed up (workers catching up after
an outage, or slower than the traffic) most of those ids are still waiting in the queue from the
previous sweep, and re-sending them on every tick made the queue grow faster than the workers
drained it: the chaos run saw `callbacks.sweep_due` send 500 messages every tick for minutes and
deliveries arrive minutes late. A Redis key per id (`SET NX EX`, under the deployment's namespace)
lets one re-send through per interval; a message that really was lost is sent again at most one
interval later. With Redis unreachable nothing can be published anyway: the sweep ends at once,
and the next tick tries again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from jivapay.utils.redis_client import REDIS_ERRORS, get_redis, namespace

log = structlog.get_logger(__name__)


def _not_recently_sent(kind: str, ids: Sequence[int], interval_seconds: int) -> list[int]:
    prefix = f"{namespace()}:requeued:{kind}:"
    pipe = get_redis().pipeline(transaction=False)
    for item in ids:
        pipe.set(f"{prefix}{item}", "1", nx=True, ex=max(interval_seconds, 1))
    return [item for item, fresh in zip(ids, pipe.execute(), strict=True) if fresh]


def requeue(
    kind: str, ids: Sequence[int], send: Callable[[int], None], *, interval_seconds: int
) -> int:
    """Send `send(id)` for each id of `ids` not re-sent in the last `interval_seconds`; returns how
    many were sent. The first failed publish ends the sweep (the broker is down)."""
    if not ids:
        return 0
    try:
        fresh = _not_recently_sent(kind, ids, interval_seconds)
    except REDIS_ERRORS as exc:
        log.warning("requeue_skipped", kind=kind, error=str(exc))
        return 0
    sent = 0
    for item in fresh:
        try:
            send(item)
        except Exception as exc:  # kombu's OperationalError, a socket error: the broker is down
            log.warning("requeue_stopped", kind=kind, sent=sent, error=str(exc))
            break
        sent += 1
    return sent
