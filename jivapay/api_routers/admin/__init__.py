"""The admin server's own routers (admin only): identity and grants, run-time
settings, reference data and exchange rates, logs, GDPR requests and system checks. Every route is
mounted under `/admin` and guarded by a permission; `ADMIN_ROUTERS` lists them for the server."""

from __future__ import annotations
