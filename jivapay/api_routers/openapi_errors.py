"""OpenAPI `responses` entries for the problem+json errors a route can really answer."""

from __future__ import annotations

from typing import Any

_TITLES = {
    401: "Not authenticated or token refused",
    403: "Wrong role or missing permission",
    404: "Not found (or another owner's object)",
    409: "Conflict: duplicate or impossible status change",
    422: "Invalid input (nothing was written)",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: 401 and 403 always, plus `codes`, each as problem+json."""
    return {
        code: {
            "description": _TITLES.get(code, "problem+json"),
            "content": {"application/problem+json": {}},
        }
        for code in sorted({401, 403, *codes})
    }
