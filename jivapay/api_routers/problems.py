"""The `responses=` entries routes declare for the problem+json errors they can really raise, so
each server's OpenAPI document lists them."""

from __future__ import annotations

from typing import Any

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Not authenticated (missing, invalid or expired token)",
    403: "This account's role or grants do not allow this route",
    404: "Not found, or another owner's object",
    409: "Conflict with the current state",
    422: "Invalid input: unknown field, filter value, bad date or period",
    429: "Rate limited",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for `codes`, each an `application/problem+json` body."""
    return {
        code: {
            "description": _DESCRIPTIONS.get(code, "Error"),
            "content": {"application/problem+json": {"schema": {"type": "object"}}},
        }
        for code in codes
    }
