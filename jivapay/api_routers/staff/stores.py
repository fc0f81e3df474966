"""Staff store controls, mounted on the admin and support servers (the grant decides):
`PATCH /stores/{id}` (traffic and access switches, limits, lifetime, intake switches: the only way a
store goes live), `PUT /stores/{id}/commission` (a new rate row for new orders) and
`POST /stores/{id}/keys/rotate`. A missing store is 404, a missing grant 403."""

from __future__ import annotations

from fastapi import Depends

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import ClientIp, DbSession, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.permissions import Permission, ensure_permission
from jivapay.schemas.stores import (
    StoreAdminUpdate,
    StoreChangeRead,
    StoreCommissionChangeRead,
    StoreCommissionIn,
    StoreKeysRead,
)
from jivapay.security import Principal
from jivapay.services import store_service

router = LosslessJSONRouter(prefix="/stores", tags=["stores"])

# 401, 403, 404 (the store in the path), 422 and 429 are declared on every route by
# `responses.document_problems`; only the update has an error of its own.


def _actor(principal: Principal, ip: str | None) -> store_service.Actor:
    return store_service.Actor(user_id=principal.user_id, ip_address=ip)


@router.patch(
    "/{store_id}",
    response_model=StoreChangeRead,
    responses=problem_responses(
        409, described={409: "`commission_missing`: traffic needs a commission first"}
    ),
)
def update_store(
    store_id: PathId,
    data: StoreAdminUpdate,
    session: DbSession,
    ip: ClientIp,
    principal: Principal = Depends(
        require_permission(Permission.STORES_EDIT_ALL, id_param="store_id")
    ),
) -> StoreChangeRead:
    """Change a store (`stores:edit:all`; `trafic_access` also needs `stores:traffic:all`).

    Traffic is enabled only once the store has a commission (else 409 `commission_missing`).
    """
    if "trafic_access" in data.model_fields_set:
        ensure_permission(principal, Permission.STORES_TRAFFIC_ALL)
    view, changed = store_service.admin_update(
        session, store_id=store_id, data=data, actor=_actor(principal, ip)
    )
    return StoreChangeRead(**view.model_dump(), changed=changed)


@router.put("/{store_id}/commission", response_model=StoreCommissionChangeRead)
def set_commission(
    store_id: PathId,
    data: StoreCommissionIn,
    session: DbSession,
    ip: ClientIp,
    principal: Principal = Depends(
        require_permission(Permission.STORE_COMMISSIONS_EDIT_ALL, id_param="store_id")
    ),
) -> StoreCommissionChangeRead:
    """A new commission row (`store_commissions:edit:all`): new orders get it, open ones keep theirs."""
    row, changed = store_service.set_commission(
        session, store_id=store_id, data=data, actor=_actor(principal, ip)
    )
    return StoreCommissionChangeRead(**row.model_dump(), store_id=store_id, changed=changed)


@router.post("/{store_id}/keys/rotate", response_model=StoreKeysRead)
def rotate_keys(
    store_id: PathId,
    session: DbSession,
    ip: ClientIp,
    principal: Principal = Depends(
        require_permission(Permission.STORES_KEYS_ALL, id_param="store_id")
    ),
) -> StoreKeysRead:
    """A new key pair (`stores:keys:all`), shown once; the old pair is refused (401) at once."""
    store = store_service.staff_store(session, store_id=store_id)
    rotated = store_service.rotate_keys(session, store=store, actor=_actor(principal, ip))
    return StoreKeysRead.model_validate(rotated)
