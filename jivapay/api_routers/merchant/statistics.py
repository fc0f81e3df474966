"""Merchant statistics route: per own store and order type, for a period of at most 366 days."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from jivapay.api_routers.deps import MAX_ID, CurrentPrincipal, DbSession
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.schemas.merchant import MerchantStatisticsRead
from jivapay.services import merchant_statistics

router = LosslessJSONRouter(prefix="/merchant/statistics", tags=["merchant statistics"])


@router.get("", response_model=MerchantStatisticsRead, responses=problem_responses(404, 422))
def statistics(
    session: DbSession,
    principal: CurrentPrincipal,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    store_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> MerchantStatisticsRead:
    """Counts by status, completed turnover, commission paid, conversion and average time to
    complete, per store and type, for [date_from, date_to) (default: the last 30 days). A
    `store_id` that is not one of my stores is 404."""
    return merchant_statistics.merchant_statistics(
        session, principal=principal, date_from=date_from, date_to=date_to, store_id=store_id
    )
