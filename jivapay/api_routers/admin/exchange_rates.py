"""Exchange rates on the admin server: every pair with its age and staleness, a manual rate, and an
immediate refresh from the configured HTTP source."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import ClientIp, DbSession
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.permissions import Permission
from jivapay.schemas.admin import ExchangeRateRead, ExchangeRateUpdate, RateRefreshRead
from jivapay.security import Principal
from jivapay.services import rate_refresh, reference_admin
from jivapay.services.audit_logger import log_event

router = LosslessJSONRouter(prefix="/admin/exchange-rates", tags=["admin: reference data"])

CanView = Annotated[Principal, Depends(require_permission(Permission.REFERENCE_VIEW_ALL))]
CanEdit = Annotated[Principal, Depends(require_permission(Permission.EXCHANGE_RATES_EDIT_ALL))]
Code = Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9]{1,9}$")]


@router.get("", response_model=list[ExchangeRateRead], responses=problem_responses(403))
def list_rates(session: DbSession, _: CanView) -> list[ExchangeRateRead]:
    """Every pair: buy, sell, median, source, age and whether intake would refuse it as stale."""
    return reference_admin.list_rates(session)


@router.put(
    "/{crypto}/{fiat}", response_model=ExchangeRateRead, responses=problem_responses(403, 404, 422)
)
def set_rate(
    crypto: Code,
    fiat: Code,
    body: ExchangeRateUpdate,
    session: DbSession,
    principal: CanEdit,
    ip: ClientIp,
) -> ExchangeRateRead:
    """Set a pair's rate by hand (positive, at most 8 places; median defaults to the midpoint)."""
    return reference_admin.set_rate(
        session,
        crypto=crypto,
        fiat=fiat,
        buy=body.buy_rate,
        sell=body.sell_rate,
        median=body.median_rate,
        actor_user_id=principal.user_id,
        ip_address=ip,
    )


@router.post("/refresh", response_model=RateRefreshRead, responses=problem_responses(403))
def refresh_rates(session: DbSession, principal: CanEdit, ip: ClientIp) -> RateRefreshRead:
    """Run the rate refresh now; reports the pairs updated and the entries refused.

    The refresh writes in its own transaction after the HTTP call; this request only records who
    asked (no lock is held while the source answers).
    """
    result = rate_refresh.refresh_rates()
    log_event(
        session,
        action="exchange_rate.refresh_requested",
        user_id=principal.user_id,
        target_entity="exchange_rate",
        details={"status": result.status, "updated": list(result.updated), "error": result.error},
        ip_address=ip,
    )
    return RateRefreshRead(
        status=result.status,
        updated=list(result.updated),
        rejected=list(result.rejected),
        error=result.error,
    )
