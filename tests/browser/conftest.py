"""Browser fixtures: Debian's Chromium driven by Playwright, axe-core from npm, and the gateway
served by uvicorn on a real port (27000-27099) so the page runs exactly as a payer's browser sees it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = HERE.parent / "artifacts" / "payer-page"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _ensure_chromium() -> str | None:
    """The browser's path, installing Debian's package if missing; None when that is impossible."""
    if not CHROMIUM.exists() and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            capture_output=True,
            check=False,
            timeout=600,
        )
    return str(CHROMIUM) if CHROMIUM.exists() else None


def _ensure_axe() -> Path | None:
    if not AXE.exists() and shutil.which("npm"):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=False, timeout=300)
    return AXE if AXE.exists() else None


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    path = _ensure_chromium()
    if path is None:
        pytest.skip(
            "Chromium is not installed and `apt-get install chromium` failed on this machine"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the `playwright` Python package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def axe_script() -> Path:
    path = _ensure_axe()
    if path is None:
        pytest.skip("axe-core could not be installed (`npm ci` in tests/browser needs npm)")
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _free_port() -> int:
    for port in range(27000, 27100):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 27000-27099")


@pytest.fixture
def gateway_url(committed_db, s3_endpoint) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The gateway app served by uvicorn in a thread of this process."""
    import uvicorn

    from jivapay.servers.gateway.server import app

    for _ in range(5):
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.started:
            break
        server.should_exit = True
        thread.join(5)
    else:
        raise RuntimeError("the gateway did not start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
