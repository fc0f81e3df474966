"""The chaos test's beat: runs the beat schedule's sweep tasks (their real bodies, sending through
the real Celery app) every `--every` seconds instead of 10-30 s, so a run of minutes sees many
sweeps. A sweep that fails (PostgreSQL restarting, Redis stopped) is logged and tried again on the
next tick, as beat's next tick would.

    python -m tests.concurrency.chaos_beat --every 2
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=float, default=2.0)
    every = parser.parse_args().every

    from jivapay.worker.callback_tasks import sweep_due_callbacks
    from jivapay.worker.tasks import expire_overdue_orders, sweep_due_orders

    sweeps = (sweep_due_orders, expire_overdue_orders, sweep_due_callbacks)
    while True:
        started = time.monotonic()
        for sweep in sweeps:
            try:
                done = sweep()
                print(f"{time.time():.1f} {sweep.name} {done}", flush=True)
            except Exception:
                print(f"{time.time():.1f} {sweep.name} failed", flush=True)
                traceback.print_exc(limit=3, file=sys.stdout)
        time.sleep(max(every - (time.monotonic() - started), 0.1))


if __name__ == "__main__":
    main()
