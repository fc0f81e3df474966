"""Load generator for bench/intake.py, run as its own process: fires pre-built requests over
keep-alive connections and prints one JSON line of figures.

Two modes: closed loop at a fixed `concurrency` (the maximum rate: each connection sends its next
request when the last one is answered), or open loop at a fixed `rate` (request i is due at
start + i / rate whatever happened before, and its latency counts from that due time, so a server
that falls behind is charged for the queue it builds instead of slowing the load down)."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx


async def _run(url: str, requests: list[dict[str, object]], concurrency: int) -> dict[str, object]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            while not queue.empty():
                item = queue.get_nowait()
                started = time.perf_counter()
                r = await client.post(
                    str(item["path"]),
                    content=str(item["body"]).encode(),
                    headers=item["headers"],  # type: ignore[arg-type]
                )
                latencies.append(time.perf_counter() - started)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {"elapsed": elapsed, "latencies": latencies, "statuses": statuses}


async def _run_paced(
    url: str, requests: list[dict[str, object]], rate: float, connections: int = 64
) -> dict[str, object]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def one(item: dict[str, object], due: float) -> None:
            await asyncio.sleep(max(due - time.perf_counter(), 0))
            r = await client.post(
                str(item["path"]),
                content=str(item["body"]).encode(),
                headers=item["headers"],  # type: ignore[arg-type]
            )
            latencies.append(time.perf_counter() - due)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        began = time.perf_counter() + 0.05
        await asyncio.gather(*(one(item, began + i / rate) for i, item in enumerate(requests)))
        elapsed = time.perf_counter() - began
    return {"elapsed": elapsed, "latencies": latencies, "statuses": statuses}


def main() -> None:
    spec = json.load(sys.stdin)
    if spec.get("rate"):
        result = asyncio.run(_run_paced(spec["url"], spec["requests"], float(spec["rate"])))
    else:
        result = asyncio.run(_run(spec["url"], spec["requests"], int(spec["concurrency"])))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
