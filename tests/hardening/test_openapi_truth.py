"""The OpenAPI documents state what the servers accept, and the servers accept what they state:
money and URL patterns agree with their validators (hypothesis), required headers and the PayOut's
"exactly one amount" are declared, a 405 names every method of the path, an unreadable body is the
same 422 as malformed JSON, and multipart bodies refuse fields the document does not list."""

from __future__ import annotations

import importlib
import re
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway.callbacks import router as callbacks_router
from jivapay.api_routers.gateway.payer_page import payer_router
from jivapay.api_routers.gateway.router import router as gateway_router
from jivapay.enums import Role
from jivapay.schemas import common
from jivapay.schemas.gateway import PayInCreate
from jivapay.schemas.stores import StoreUpdate
from jivapay.security import create_access_token
from jivapay.servers.app_factory import ServerName, build_app
from jivapay.servers.exception_handlers import PROBLEM_JSON
from jivapay.servers.merchant.server import app as merchant_app
from jivapay.services import idempotency
from jivapay.utils.exceptions import BadRequest
from tests.factories import make_user

MONEY_TYPES = ["FiatAmountIn", "CryptoAmountIn", "PercentIn", "FiatLimitIn"]
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _pattern(annotated: Any) -> str:
    pattern: str = TypeAdapter(annotated).json_schema()["pattern"]
    return pattern


def _accepts(annotated: Any, value: Any) -> bool:
    try:
        TypeAdapter(annotated).validate_python(value)
    except ValidationError:
        return False
    return True


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------------- patterns = validators


@pytest.mark.parametrize("name", MONEY_TYPES)
def test_every_string_of_a_money_pattern_is_accepted(name: str) -> None:
    annotated = getattr(common, name)

    @_SETTINGS
    @given(st.from_regex(_pattern(annotated), fullmatch=True))
    def accepted(value: str) -> None:
        assert _accepts(annotated, value), value

    accepted()


@pytest.mark.parametrize("name", MONEY_TYPES)
def test_a_money_string_outside_its_pattern_is_refused(name: str) -> None:
    annotated = getattr(common, name)
    pattern = re.compile(_pattern(annotated)[1:-1])
    candidates = st.one_of(
        st.text(alphabet="0123456789.", max_size=24),
        st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,10})?", fullmatch=True),
        st.text(max_size=8),
    )

    @_SETTINGS
    @given(candidates)
    def agrees(value: str) -> None:
        assert _accepts(annotated, value) == (pattern.fullmatch(value) is not None), value

    agrees()


def test_every_url_of_the_pattern_is_accepted_and_parses_with_a_host() -> None:
    @_SETTINGS
    @given(st.from_regex(common.HTTP_URL_PATTERN, fullmatch=True).filter(lambda u: len(u) <= 2000))
    def accepted(url: str) -> None:
        assert _accepts(common.HttpUrlIn, url), url
        assert httpx.URL(url).host

    accepted()


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/cb\r\nX-Injected: 1",
        "https://shop.example/a b",
        "https://xn--e1afmkfd.xn--p1ai.рф/cb",
        "https://пример.рф/cb",
        "ftp://shop.example/",
        "https://",
        "https://shop.example:0/",
        "https://shop.example:65536/",
        "https://shop.example/\n",
        " https://shop.example/",
    ],
)
def test_store_callback_url_refuses_what_the_pattern_refuses(url: str) -> None:
    # A store's callback_url used to pass with any http(s) prefix (CR/LF, spaces, IDN hosts).
    assert not re.fullmatch(common.HTTP_URL_PATTERN[1:-1], url)
    with pytest.raises(ValidationError):
        StoreUpdate.model_validate({"callback_url": url})
    # The gateway's bodies strip whitespace: a URL is checked as sent.
    with pytest.raises(ValidationError):
        PayInCreate.model_validate(
            {
                "merchant_order_id": "m-1",
                "fiat_currency": "RUB",
                "amount_fiat": "10",
                "return_url": url,
            }
        )


def test_idempotency_key_is_printable_ascii() -> None:
    assert idempotency.validate_key("order-1 retry 2") == "order-1 retry 2"
    for key in ("ключ", "a\tb", "k" * 256):
        with pytest.raises(BadRequest):
            idempotency.validate_key(key)


# ---------------------------------------------------------------------- the documents


def _gateway() -> TestClient:
    app = build_app(ServerName.GATEWAY, routers=[gateway_router, callbacks_router, payer_router])
    return TestClient(app, raise_server_exceptions=False)


def test_gateway_document_declares_the_signature_and_idempotency_headers(db: Session) -> None:
    document = _gateway().get("/openapi.json").json()
    intake = document["paths"]["/gateway/payin/init"]["post"]
    headers = {p["name"].lower(): p for p in intake["parameters"] if p["in"] == "header"}

    for name in ("x-timestamp", "x-signature", "idempotency-key"):
        assert headers[name]["required"] is True
        assert headers[name]["schema"]["type"] == "string"
    status = document["paths"]["/gateway/payin/status/{order_id}"]["get"]
    assert "idempotency-key" not in {p["name"].lower() for p in status["parameters"]}


def test_payout_document_says_exactly_one_amount(db: Session) -> None:
    document = _gateway().get("/openapi.json").json()
    payout = document["components"]["schemas"]["PayOutCreate"]

    required = sorted(branch["required"][0] for branch in payout["oneOf"])
    assert required == ["amount_crypto", "amount_fiat"]
    fiat = payout["properties"]["amount_fiat"]["anyOf"][0]
    assert fiat["type"] == "string" and fiat["pattern"] == _pattern(common.FiatAmountIn)
    for field in ("return_url", "callback_url"):
        assert payout["properties"][field]["anyOf"][0]["pattern"] == common.HTTP_URL_PATTERN
    ip = payout["properties"]["customer_ip"]["anyOf"][0]
    assert ip["anyOf"] == [{"format": "ipv4"}, {"format": "ipv6"}]


def test_every_error_response_is_a_problem(db: Session) -> None:
    for role in ServerName:
        server = importlib.import_module(f"jivapay.servers.{role.value}.server")
        document = TestClient(server.app).get("/openapi.json").json()
        for path, item in document["paths"].items():
            for method, operation in item.items():
                for status, response in operation["responses"].items():
                    if status[0] in "45":
                        assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)


# ---------------------------------------------------------------------- answers


def test_405_names_every_method_the_path_serves(db: Session) -> None:
    # Starlette answered with the first route's methods only (`Allow: GET` on GET+POST /stores).
    user = make_user(db, Role.MERCHANT)
    db.commit()
    client = TestClient(merchant_app, raise_server_exceptions=False)
    token = {"Authorization": f"Bearer {create_access_token(user.id, Role.MERCHANT)}"}

    response = client.request("OPTIONS", "/merchant/stores", headers=token)

    assert _problem(response, 405)["code"] == "method_not_allowed"
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}


def test_a_body_that_is_not_utf8_is_the_422_of_malformed_json(db: Session) -> None:
    # FastAPI answered 400 `bad_request` on role servers for a non-UTF-8 JSON body.
    user = make_user(db, Role.MERCHANT)
    db.commit()
    client = TestClient(merchant_app, raise_server_exceptions=False)
    headers = {
        "Authorization": f"Bearer {create_access_token(user.id, Role.MERCHANT)}",
        "Content-Type": "application/json",
    }

    not_utf8 = client.post(
        "/merchant/stores", content=b'{"store_name": "\xff\xfe"}', headers=headers
    )
    malformed = client.post("/merchant/stores", content=b'{"store_name": ', headers=headers)

    assert (
        _problem(not_utf8, 422)["code"] == _problem(malformed, 422)["code"] == "validation_failed"
    )


def test_payer_confirm_refuses_form_fields_it_does_not_document(db: Session) -> None:
    # Unknown fields were ignored, and more than five of them answered Starlette's 400.
    client = _gateway()

    one = client.post("/gateway/payin/confirm/unknown-order", files={"note": (None, "x")})
    many = client.post(
        "/gateway/payin/confirm/unknown-order",
        files={f"f{i}": (None, "x") for i in range(8)},
    )

    assert "note" in _problem(one, 422)["detail"]
    assert _problem(many, 422)["code"] == "validation_failed"


def test_login_form_documents_and_enforces_its_lengths(db: Session) -> None:
    client = TestClient(build_app(Role.MERCHANT), raise_server_exceptions=False)
    document = client.get("/openapi.json").json()
    ref = document["paths"]["/merchant/auth/token"]["post"]["requestBody"]["content"]
    form = ref["application/x-www-form-urlencoded"]["schema"]["$ref"].rsplit("/", 1)[1]
    properties = document["components"]["schemas"][form]["properties"]

    assert properties["username"]["minLength"] == 3 and properties["password"]["minLength"] == 1
    empty = client.post("/merchant/auth/token", data={"username": "", "password": ""})
    wrong_grant = client.post(
        "/merchant/auth/token",
        data={"username": "a@b.c", "password": "x", "grant_type": "client_credentials"},
    )
    assert _problem(empty, 422)["code"] == "validation_failed"
    assert _problem(wrong_grant, 422)["code"] == "validation_failed"


def test_every_integer_parameter_is_bounded(db: Session) -> None:
    # Unbounded ids (`user_id: int`, `Query(ge=1)`) let a valid-looking 2**64 reach PostgreSQL.
    unbounded = []
    for server in ServerName:
        app = importlib.import_module(f"jivapay.servers.{server.value}.server").app
        for path, item in app.openapi()["paths"].items():
            for method, operation in item.items():
                for parameter in operation.get("parameters", []):
                    schema = parameter["schema"]
                    for option in schema.get("anyOf", [schema]):
                        if option.get("type") == "integer" and not (
                            "minimum" in option and "maximum" in option
                        ):
                            unbounded.append(f"{server.value} {method} {path} {parameter['name']}")
    assert unbounded == []


def test_a_literal_segment_is_not_served_by_an_id_route(db: Session) -> None:
    # PATCH /admin/users/stats reached PATCH /admin/users/{user_id} (a 422); OPTIONS said so.
    user = make_user(db, Role.ADMIN)
    db.commit()
    app = importlib.import_module("jivapay.servers.admin.server").app
    client = TestClient(app, raise_server_exceptions=False)
    token = {"Authorization": f"Bearer {create_access_token(user.id, Role.ADMIN)}"}

    response = client.request("OPTIONS", "/admin/users/stats", headers=token)

    assert _problem(response, 405)["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET"
