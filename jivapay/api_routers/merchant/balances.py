"""Merchant money routes: the balance of each own store per crypto, and the balance history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from jivapay.api_routers.deps import MAX_ID, CurrentPrincipal, DbSession, PageParams
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.database.base import as_utc
from jivapay.enums import BalanceOperation
from jivapay.schemas.common import Page
from jivapay.schemas.merchant import StoreBalanceHistoryRead, StoreBalanceRead
from jivapay.services import merchant_balances
from jivapay.utils.exceptions import ValidationFailed

router = LosslessJSONRouter(prefix="/merchant/balances", tags=["merchant balances"])


@router.get("", response_model=Page[StoreBalanceRead], responses=problem_responses(422))
def list_balances(
    session: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[StoreBalanceRead]:
    """Each of my stores' balance per crypto: balance, frozen (open PayOuts), available."""
    items, total = merchant_balances.list_balances(
        session, principal=principal, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get(
    "/history", response_model=Page[StoreBalanceHistoryRead], responses=problem_responses(422)
)
def balance_history(
    session: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    store_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    operation: BalanceOperation | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> Page[StoreBalanceHistoryRead]:
    """Every change of my stores' balances, newest first (`created_to` is exclusive)."""
    if created_from and created_to and as_utc(created_from) > as_utc(created_to):
        raise ValidationFailed("created_from must not be after created_to", code="bad_period")
    filters = merchant_balances.HistoryFilters(store_id, operation, created_from, created_to)
    items, total = merchant_balances.list_history(
        session, principal=principal, filters=filters, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)
