"""The admin server's own routers (admin only): identity and grants, run-time
settings, reference data and exchange rates, logs, GDPR requests and system checks. Every route is
mounted under `/admin` and guarded by a permission; `ADMIN_ROUTERS` lists them for the server."""

from __future__ import annotations

from typing import Any

from jivapay.servers.exception_handlers import PROBLEM_JSON

_DESCRIPTIONS = {
    403: "Missing permission, or granting what the caller does not hold",
    404: "No such object",
    409: "Conflict with the current state",
    422: "Invalid input (nothing was written)",
    503: "A dependency did not answer",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problem+json errors a route can really return."""
    return {s: {"description": _DESCRIPTIONS[s], "content": {PROBLEM_JSON: {}}} for s in statuses}
