"""Problem+json rendering of domain errors, validation errors, HTTP errors and unexpected errors."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from jivapay.servers.exception_handlers import PROBLEM_JSON, register_exception_handlers
from jivapay.utils.exceptions import (
    ConfigurationError,
    InsufficientBalance,
    InvalidStatusTransition,
    InvariantViolation,
    RateLimited,
    StaleExchangeRate,
)


class Body(BaseModel):
    amount: int


def _app() -> FastAPI:
    app = FastAPI()
    register_exception_handlers(app)

    @app.get("/conflict")
    def conflict() -> None:
        raise InvalidStatusTransition("order is completed")

    @app.get("/money")
    def money() -> None:
        raise InsufficientBalance("available 1.00 < 2.00")

    @app.get("/slow-down")
    def slow_down() -> None:
        raise RateLimited(retry_after=17)

    @app.post("/body")
    def body(b: Body) -> dict[str, int]:
        return {"amount": b.amount}

    @app.get("/misconfigured")
    def misconfigured() -> None:
        raise ConfigurationError("store 12 has no commission row", extra={"store_id": 12})

    @app.get("/broken-invariant")
    def broken_invariant() -> None:
        raise InvariantViolation("hold of order ord_secret is not in place")

    @app.get("/stale")
    def stale() -> None:
        raise StaleExchangeRate("USDT/RUB rate 3600 s old from source 10.0.0.7")

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("db password hunter2 card 4111111111111111")

    return app


def test_domain_error_is_problem_json_with_stable_code() -> None:
    r = TestClient(_app()).get("/conflict")
    assert r.status_code == 409
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    body = r.json()
    assert body["code"] == "invalid_status_transition"
    assert body["status"] == 409
    assert body["detail"] == "order is completed"
    assert body["type"] == "tag:jivapay,2026:problem:invalid_status_transition"
    assert body["title"]


def test_insufficient_balance_and_retry_after() -> None:
    client = TestClient(_app())
    assert client.get("/money").json()["code"] == "insufficient_balance"
    r = client.get("/slow-down")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "17"


def test_validation_error_lists_fields() -> None:
    r = TestClient(_app()).post("/body", json={"amount": "abc"})
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_failed"
    assert body["errors"][0]["loc"] == ["body", "amount"]


def test_unknown_route_is_problem_json() -> None:
    r = TestClient(_app()).get("/nope")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.json()["code"] == "not_found"


def test_unexpected_error_leaks_nothing() -> None:
    r = TestClient(_app(), raise_server_exceptions=False).get("/crash")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    text = r.text
    assert "hunter2" not in text and "4111" not in text and "RuntimeError" not in text


def test_a_5xx_domain_error_answers_its_code_with_a_generic_detail(capsys) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(_app())
    for path, status, code, secret in [
        ("/misconfigured", 500, "configuration_error", "store 12"),
        ("/broken-invariant", 500, "invariant_violation", "ord_secret"),
        ("/stale", 503, "stale_exchange_rate", "10.0.0.7"),
    ]:
        r = client.get(path)
        body = r.json()
        assert (r.status_code, body["code"]) == (status, code)
        assert secret not in r.text and "store_id" not in body
        assert body["detail"] in {
            "An internal error occurred. It has been logged.",
            "The service is temporarily unavailable. Retry later.",
        }
    assert "store 12 has no commission row" in capsys.readouterr().out  # the message is logged
