"""Production exposure settings: DOCS_ENABLED, METRICS_ALLOWED_NETWORKS, METRICS_PORT / --metrics-port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from jivapay.config import Settings, reset_settings_cache
from jivapay.servers.app_factory import build_app

API_PORT = 28016
METRICS_PORT = 28017


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    reset_settings_cache()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings_cache()


def _app(monkeypatch: pytest.MonkeyPatch, **env: str) -> FastAPI:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    return build_app("merchant")


def test_docs_are_served_by_default(settings_env: pytest.MonkeyPatch) -> None:
    client = TestClient(_app(settings_env))
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_docs_switched_off(settings_env: pytest.MonkeyPatch) -> None:
    client = TestClient(_app(settings_env, DOCS_ENABLED="false"))
    for path in ("/docs", "/openapi.json", "/docs/assets/swagger-ui.css"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get("/health").status_code == 200


def test_metrics_only_to_allowed_networks(settings_env: pytest.MonkeyPatch) -> None:
    app = _app(settings_env, METRICS_ALLOWED_NETWORKS="10.0.0.0/8, fd00::/8")
    inside = TestClient(app, client=("10.20.30.40", 50000))
    inside_v6 = TestClient(app, client=("fd00::1", 50000))
    outside = TestClient(app, client=("203.0.113.9", 50000))
    assert inside.get("/metrics").status_code == 200
    assert "http_requests_total" in inside.get("/metrics").text
    assert inside_v6.get("/metrics").status_code == 200
    refused = outside.get("/metrics")
    assert refused.status_code == 404
    assert "http_requests_total" not in refused.text
    # Only /metrics is fenced: the API itself still answers everyone.
    assert outside.get("/health").status_code == 200


def test_metrics_open_to_all_without_networks(settings_env: pytest.MonkeyPatch) -> None:
    client = TestClient(_app(settings_env), client=("203.0.113.9", 50000))
    assert client.get("/metrics").status_code == 200


def test_metrics_port_takes_metrics_off_the_api_port(settings_env: pytest.MonkeyPatch) -> None:
    client = TestClient(_app(settings_env, METRICS_PORT=str(METRICS_PORT)))
    assert client.get("/metrics").status_code == 404


def test_bad_network_is_refused_at_startup() -> None:
    with pytest.raises(ValidationError, match="METRICS_ALLOWED_NETWORKS"):
        Settings(METRICS_ALLOWED_NETWORKS="10.0.0.0/8,not-a-network")


def test_serve_with_metrics_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`jivapay serve --metrics-port`: /metrics on its own port, summed over uvicorn workers."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "DOCS_ENABLED": "false",
    }
    env.pop("METRICS_PORT", None)
    argv = [sys.executable, "-c", "import sys; from jivapay.cli import main; sys.exit(main())"]
    argv += ["serve", "--role", "gateway", "--port", str(API_PORT), "--workers", "2"]
    argv += ["--metrics-port", str(METRICS_PORT)]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{API_PORT}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "serve.log").read_text(errors="replace"))
            time.sleep(0.3)
        for _ in range(9):
            assert httpx.get(f"http://127.0.0.1:{API_PORT}/health", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{API_PORT}/metrics", timeout=5).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{API_PORT}/docs", timeout=5).status_code == 404
        body = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
        line = next(
            row
            for row in body.splitlines()
            if row.startswith("http_requests_total{")
            and 'route="/health"' in row
            and 'status="200"' in row
        )
        # 10 health checks answered 200, whichever of the two workers served them.
        assert float(line.rsplit(" ", 1)[1]) >= 10
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
