"""Error responses as the OpenAPI documents show them: one RFC 9457 `Problem` schema served as
`application/problem+json` for every error status.

Two pieces, for every router of every server:

- `problem_responses(404, 409, ...)`: a route's own error statuses, for `responses=` of a route
  decorator (`@router.get(..., responses=problem_responses(409))`), the one helper every router
  uses; a route lists what it can really answer beyond what `document_problems` adds.
- `document_problems(app)`: installed by the app factory on every server. It rewrites the app's
  OpenAPI document once: every 4xx/5xx response (FastAPI's 422 included) becomes a `Problem`, and the
  statuses every route can answer are declared where they apply: 422 (validation, NUL characters)
  and 429 (rate limits) everywhere, 413 where there is a body, 401 where credentials are required
  (401/403 on bearer routes), 404 where the path names an object.

A header the route refuses with its own problem when it is missing (the store signature headers are
401, `Idempotency-Key` is 400) is optional to FastAPI; `required_header(name, schema)` makes every
operation that reads it declare it required, with the schema the route checks it against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
_EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})

DESCRIPTIONS: dict[int, str] = {
    400: "Bad request",
    401: "Missing or invalid credentials",
    403: "Not allowed for this account",
    404: "Not found (another owner's object is 404 too)",
    409: "Conflict with the object's current state",
    413: "Request body too large",
    415: "Unsupported file type",
    422: "Validation failed",
    429: "Rate limited or temporarily blocked (see Retry-After)",
    502: "A storage or upstream service failed",
    503: "A dependency is unavailable",
}


class Problem(BaseModel):
    """An error (RFC 9457). `code` is the stable machine-readable reason."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["tag:jivapay,2026:problem:not_found"])
    title: str
    status: int = Field(ge=400, le=599)
    code: str
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None


def _problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    }


def problem_responses(
    *statuses: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: each status answered as a `Problem`; `described` gives a status
    a description of its own (what it means on this route)."""
    said = described or {}
    return {status: _problem_response(status, said.get(status)) for status in statuses}


_REQUIRED_HEADERS: dict[str, dict[str, Any]] = {}


def required_header(name: str, schema: dict[str, Any], description: str) -> None:
    """Declare header `name` required (with `schema`) wherever a route reads it."""
    _REQUIRED_HEADERS[name.lower()] = {"schema": schema, "description": description}


def _declare_required_headers(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        declared = _REQUIRED_HEADERS.get(str(parameter.get("name", "")).lower())
        if parameter.get("in") == "header" and declared is not None:
            parameter.update(required=True, **declared)


def _security_kinds(operation: dict[str, Any], schemes: dict[str, Any]) -> set[str]:
    kinds: set[str] = set()
    for requirement in operation.get("security", []):
        for name in requirement:
            kinds.add(str(schemes.get(name, {}).get("type", "")) + ":" + name)
    return kinds


def _rewrite(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    security_schemes = components.get("securitySchemes", {})
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            _declare_required_headers(operation)
            responses: dict[str, Any] = operation.setdefault("responses", {})
            wanted: set[int] = set()
            if path not in _EXEMPT_PATHS:
                wanted |= {422, 429}
                if "requestBody" in operation:
                    wanted.add(413)
                kinds = _security_kinds(operation, security_schemes)
                if kinds:
                    wanted.add(401)
                if any(kind.startswith("http:") for kind in kinds):
                    wanted.add(403)
                if "{" in path:
                    wanted.add(404)
            for code in wanted:
                responses.setdefault(str(code), {})
            for key, response in list(responses.items()):
                if key[:1] in ("4", "5"):
                    description = response.get("description")
                    if not description or description in ("Validation Error", "problem+json"):
                        description = None
                    responses[key] = _problem_response(int(key), description)
    return schema


def document_problems(app: FastAPI) -> None:
    """Make `app.openapi()` describe every error as a `Problem` (see the module doc)."""
    original: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _rewrite(original())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
