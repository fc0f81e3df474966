"""Staff merchant routes: every merchant with order statistics, and one merchant with its stores
(no secrets), commissions, balances and recent orders."""

from __future__ import annotations

from fastapi import Depends

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import CurrentPrincipal, DbSession, PageParams, PathId
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.permissions import Permission
from jivapay.schemas.common import Page
from jivapay.schemas.staff import MerchantDetailRead, MerchantStatsRead
from jivapay.services import staff_merchants

router = LosslessJSONRouter(tags=["staff: merchants"])

_VIEW = [Depends(require_permission(Permission.MERCHANTS_VIEW_ALL))]


@router.get("/merchants/stats", response_model=Page[MerchantStatsRead], dependencies=_VIEW)
def merchants_stats(session: DbSession, page: PageParams) -> Page[MerchantStatsRead]:
    """Every merchant with store count, order counts, completed turnover and commission paid."""
    items, total = staff_merchants.merchant_stats(session, limit=page.limit, offset=page.offset)
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get(
    "/merchants/{id}",
    response_model=MerchantDetailRead,
    dependencies=_VIEW,
    responses={404: {"description": "No such merchant"}},
)
def merchant(id: PathId, session: DbSession, principal: CurrentPrincipal) -> MerchantDetailRead:
    """A merchant with its stores, current and past commissions, balances and recent orders."""
    return staff_merchants.merchant_detail(session, principal=principal, merchant_id=id)
