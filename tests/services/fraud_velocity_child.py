"""Run in a spawned process by test_fraud_detector: count orders against shared velocity counters."""

from __future__ import annotations


def count_orders(
    redis_url: str, prefix: str, orders: list[str], counters: dict[str, str]
) -> list[int]:
    """Count each order once via the production Lua script; the store counts it got back."""
    from jivapay.services.fraud_detector import count_in_redis
    from jivapay.utils.redis_client import get_redis

    client = get_redis(redis_url)
    seen = []
    for public_id in orders:
        counts = count_in_redis(
            client, marker=f"{prefix}:seen:{public_id}", counters=counters, ttl_seconds=600
        )
        seen.append(counts["store"])
    return seen
