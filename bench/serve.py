"""Serves an ASGI app for the benchmarks with the options `jivapay serve` runs the role servers with
(`jivapay.servers.serving.uvicorn_options`), so a reference endpoint is served the way the gateway is.

    python bench/serve.py MODULE:APP PORT WORKERS
"""

from __future__ import annotations

import sys

import uvicorn

from jivapay.config import get_settings
from jivapay.servers.serving import uvicorn_options


def main() -> None:
    app, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    options = uvicorn_options(get_settings().TRUSTED_PROXIES)
    uvicorn.run(app, host="127.0.0.1", port=port, workers=workers, **options)


if __name__ == "__main__":  # uvicorn's worker processes import this module again
    main()
