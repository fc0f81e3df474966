"""Request ids (echoed or generated, bound on every log line), the access line, HTTP metrics and
JSON logging of stdlib loggers, through a real app from the factory."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from jivapay.config import reset_settings_cache
from jivapay.middleware.request_context import UNMATCHED_ROUTE, incoming_request_id
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.utils.logging import configure_logging


def _app() -> FastAPI:
    router = APIRouter(prefix="/things")

    @router.get("/{thing_id}")
    def read_thing(thing_id: int) -> dict[str, Any]:
        structlog.get_logger("jivapay.services.things").info("thing_read", thing_id=thing_id)
        logging.getLogger("some.library").warning("library says %s", "hello")
        return {"id": thing_id}

    return build_app(ServerName.GATEWAY, routers=[router])


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LOG_JSON", "true")
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    reset_settings_cache()
    configure_logging("test-process")
    configure_logging("test-process")  # idempotent: one handler, no duplicated lines
    yield
    monkeypatch.undo()
    reset_settings_cache()
    configure_logging("test-process")


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_sane_request_id_is_echoed(services: Any):
    client = TestClient(_app())
    response = client.get("/health", headers={"X-Request-ID": "abc.DEF-123_x"})
    assert response.headers["X-Request-ID"] == "abc.DEF-123_x"


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "semi;colon", "ünïcode", ""])
def test_insane_request_id_is_replaced(services: Any, bad: str):
    client = TestClient(_app())
    response = client.get("/health", headers={"X-Request-ID": bad.encode("utf-8")})
    generated = response.headers["X-Request-ID"]
    assert generated != bad
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_request_id_is_generated_when_missing(services: Any):
    client = TestClient(_app())
    first = client.get("/health").headers["X-Request-ID"]
    second = client.get("/health").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_incoming_request_id_reads_only_the_header():
    scope = {"headers": [(b"x-request-id", b"ok-1"), (b"other", b"x")]}
    assert incoming_request_id(scope) == "ok-1"
    assert incoming_request_id({"headers": []}) is None


def test_every_log_line_of_a_request_carries_its_id(
    services: Any, json_logs: None, capsys: pytest.CaptureFixture[str]
):
    client = TestClient(_app())
    capsys.readouterr()

    response = client.get("/things/42", headers={"X-Request-ID": "req-logs-1"})

    assert response.status_code == 200
    lines = _json_lines(capsys.readouterr().out)
    by_event = {line["event"]: line for line in lines}
    assert by_event["thing_read"]["request_id"] == "req-logs-1"
    assert by_event["thing_read"]["thing_id"] == 42
    # A plain stdlib logger goes through the same JSON pipeline and gets the id too.
    library = by_event["library says hello"]
    assert library["request_id"] == "req-logs-1"
    assert library["logger"] == "some.library"
    assert library["level"] == "warning"
    access = by_event["http_request"]
    assert access["request_id"] == "req-logs-1"
    assert access["method"] == "GET"
    assert access["path"] == "/things/{thing_id}"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)
    assert access["process"] == "test-process"
    # Every line the request produced (not the test client's own httpx line) carries the id.
    served = [line for line in lines if line.get("logger") != "httpx"]
    assert len(served) >= 3
    assert all(line["request_id"] == "req-logs-1" for line in served)
    # Nothing stays bound once the request is over.
    assert structlog.contextvars.get_contextvars().get("request_id") is None


def test_log_lines_mask_card_numbers(json_logs: None, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()
    structlog.get_logger("t").warning("paid from 4111 1111 1111 1111", note="card 5500000000000004")
    logging.getLogger("t.stdlib").error("card %s", "4111111111111111")

    out = capsys.readouterr().out
    assert "4111" not in out.replace("****1111", "")
    assert "5500000000000004" not in out
    assert "****1111" in out and "****0004" in out


def _requests_total(route: str, status: str) -> float:
    labels = {"server": "gateway", "method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def test_metrics_count_requests_by_route_template(services: Any):
    client = TestClient(_app())
    before_ok = _requests_total("/things/{thing_id}", "200")
    before_404 = _requests_total(UNMATCHED_ROUTE, "404")
    timed = {"server": "gateway", "method": "GET", "route": "/things/{thing_id}"}
    before_timed = REGISTRY.get_sample_value("http_request_duration_seconds_count", timed) or 0.0

    client.get("/things/1")
    client.get("/things/2")
    client.get("/no/such/route")

    assert _requests_total("/things/{thing_id}", "200") == before_ok + 2
    assert _requests_total(UNMATCHED_ROUTE, "404") == before_404 + 1
    assert REGISTRY.get_sample_value("http_request_duration_seconds_count", timed) == (
        before_timed + 2
    )
    text = client.get("/metrics").text
    assert any(
        line.startswith("http_requests_total{")
        and 'route="/things/{thing_id}"' in line
        and 'server="gateway"' in line
        for line in text.splitlines()
    )
    assert "http_request_duration_seconds_bucket" in text
    assert "/things/1" not in text
