"""Reference-data tasks: the periodic exchange-rate refresh (thin: one service call)."""

from __future__ import annotations

from typing import Any

from jivapay import task_names
from jivapay.worker.app import celery_app


@celery_app.task(name=task_names.REFERENCE_REFRESH_RATES)
def refresh_rates() -> dict[str, Any]:
    """Refresh exchange rates from the configured HTTP source when the interval has passed."""
    from jivapay.services.rate_refresh import refresh_if_due

    result = refresh_if_due()
    return {
        "status": result.status,
        "updated": list(result.updated),
        "rejected": list(result.rejected),
        "error": result.error,
    }
