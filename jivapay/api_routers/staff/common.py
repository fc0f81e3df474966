"""What the staff routers share: the acting context (principal and IP) of an operation and the
order-read guard that also admits a grant limited to one store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends

from jivapay.api_routers.auth import get_current_principal
from jivapay.api_routers.deps import ClientIp, CurrentPrincipal
from jivapay.permissions import Permission, check_permission
from jivapay.security import Principal
from jivapay.services.staff_operations import StaffContext
from jivapay.utils.exceptions import PermissionDenied
from jivapay.utils.query_filters import granted_store_ids


def staff_context(principal: CurrentPrincipal, ip: ClientIp) -> StaffContext:
    return StaffContext(principal=principal, ip_address=ip)


Staff = Annotated[StaffContext, Depends(staff_context)]


def _has_store_grant(principal: Principal) -> bool:
    return granted_store_ids(principal) != frozenset()


def require_order_reader() -> Callable[..., Principal]:
    """Admit `orders:view:all`, or a grant of one store's orders (the search is then scoped)."""

    def _require_order_reader(
        principal: Annotated[Principal, Depends(get_current_principal)],
    ) -> Principal:
        if check_permission(principal, Permission.ORDERS_VIEW_ALL) or _has_store_grant(principal):
            return principal
        raise PermissionDenied(f"Missing permission {Permission.ORDERS_VIEW_ALL}")

    _require_order_reader.required_permission = Permission.ORDERS_VIEW_ALL  # type: ignore[attr-defined]
    return _require_order_reader
