"""Where the Python time of one assignment or one PayIn intake goes, step by step.

    python bench/cpu_breakdown.py assignment [--orders 1500]
    python bench/cpu_breakdown.py intake [--requests 1500]

One process, one order or request at a time, on a scratch database of `DATABASE_URL` (Redis of
`REDIS_URL`, database 14 for intake): each step's function is wrapped with a CPU-time counter
(`time.process_time`, so waiting on PostgreSQL or Redis does not count) and the totals per order
are printed, nested steps indented. `assignment` builds the world of `bench/assignment.py` (1,000
requisites over 100 traders) and calls `process_incoming_order`; `intake` sends signed
`/gateway/payin/init` requests to the gateway app in process (httpx's ASGI transport, so the
client's own CPU is in the total; the steps are the server's). Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import scratch_database, use_database  # noqa: E402

spent: collections.Counter[str] = collections.Counter()


def _wrap(module: Any, name: str, label: str) -> None:
    """Count the CPU time of `module.name` under `label` (async functions too)."""
    original: Callable[..., Any] = getattr(module, name)
    if asyncio.iscoroutinefunction(original):

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return await original(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - started

        setattr(module, name, timed_async)
        return

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.process_time() - started

    setattr(module, name, timed)


def _print(what: str, total: float, count: int) -> None:
    print(f"{what}: {1000 * total / count:.3f} ms CPU each ({count} measured)")
    for label, seconds in spent.most_common():
        print(f"  {label:34} {1000 * seconds / count:7.3f} ms")


def assignment(orders: int) -> None:
    import assignment as bench_assignment

    bench_assignment.bench_queue()
    with scratch_database("jivapay_bench_cpu") as url:
        use_database(url)
        world = bench_assignment.build_world(1000, 100)
        ids = bench_assignment.queue_orders(world, orders + 200, seed=1)
        from jivapay import task_queue
        from jivapay.services import fraud_detector, order_processor

        _wrap(order_processor, "_main_attempt", "main transaction (all)")
        # The claim opens the transaction (pool checkout, BEGIN) and sets its generic plans.
        _wrap(order_processor, "_claim", "  claim (with the transaction's start)")
        _wrap(fraud_detector, "check_incoming_order", "  fraud check (all)")
        _wrap(fraud_detector, "_list_hits", "    block and allow lists")
        _wrap(fraud_detector, "_velocity", "    velocity")
        _wrap(fraud_detector, "_harvesting", "    unpaid expired PayIns")
        _wrap(order_processor, "plan_assignment", "  plan (all)")
        _wrap(order_processor, "find_suitable_requisite", "    selector")
        _wrap(order_processor, "write_assignment", "  write (all)")
        _wrap(order_processor, "status_change", "    status change's rows (values)")
        # The callback's message: published by the dispatcher's thread, in the same process.
        _wrap(task_queue, "send_task", "  callback messages (Celery publish)")
        for incoming_id in ids[:200]:  # warm-up: prepared statements, caches
            order_processor.process_incoming_order(incoming_id)
        spent.clear()
        started = time.process_time()
        for incoming_id in ids[200:]:
            order_processor.process_incoming_order(incoming_id)
        from jivapay import callback_dispatch

        callback_dispatch.dispatcher.flush(10)  # its thread's CPU is in the process's
        _print("process_incoming_order", time.process_time() - started, orders)
        bench_assignment.drop_redis_keys(url)


def intake(requests: int) -> None:
    import intake as bench_intake

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/14"
    with scratch_database("jivapay_bench_cpu") as url:
        os.environ["REDIS_URL"] = redis_url
        import redis

        # The bench's own Redis database: limiter counts of an earlier run would answer 429.
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
        use_database(url)
        public, private, fiat = bench_intake._world(url)
        import httpx

        from jivapay.api_routers import auth
        from jivapay.database import utils as database_utils
        from jivapay.middleware import rate_limiting
        from jivapay.servers.gateway.server import app
        from jivapay.services import gateway_service, idempotency, intake_queue

        _wrap(auth, "verify_store_request", "store signature")
        _wrap(rate_limiting, "store_authenticated", "rate limits")
        _wrap(idempotency, "run_idempotent", "idempotency (all)")
        _wrap(gateway_service, "_intake", "  intake service (all)")
        _wrap(gateway_service, "_price", "    price")
        _wrap(gateway_service, "_fresh_rate", "      rate")
        _wrap(gateway_service, "_insert_incoming", "    intake and audit rows")
        _wrap(database_utils, "_end_request_session", "commit and after-commit (all)")
        prepared = bench_intake._payin_requests(public, private, fiat, requests + 200)

        async def run() -> float:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def send(item: dict[str, Any]) -> None:
                    response = await client.post(
                        str(item["path"]),
                        content=str(item["body"]).encode(),
                        headers=item["headers"],
                    )
                    assert response.status_code == 201, response.text

                for item in prepared[:200]:
                    await send(item)
                spent.clear()
                started = time.process_time()
                for item in prepared[200:]:
                    await send(item)
                return time.process_time() - started

        _print("payin/init in process", asyncio.run(run()), requests)
        intake_queue.announcer.flush()  # before the scratch database is dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["assignment", "intake"])
    parser.add_argument("--orders", "--requests", dest="count", type=int, default=1500)
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    (assignment if args.what == "assignment" else intake)(args.count)


if __name__ == "__main__":
    main()
