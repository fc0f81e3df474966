"""Merchant store routes: list, create, read, change, deactivate, and rotate the API keys and the
callback secret of the merchant's own stores (another merchant's store is 404)."""

from __future__ import annotations

from jivapay.api_routers.deps import ClientIp, CurrentPrincipal, DbSession, PageParams, PathId
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.schemas.common import Page
from jivapay.schemas.stores import (
    CallbackSecretRead,
    StoreChangeRead,
    StoreCreate,
    StoreCreatedRead,
    StoreKeysRead,
    StoreRead,
    StoreUpdate,
)
from jivapay.security import Principal
from jivapay.services import store_service

router = LosslessJSONRouter(prefix="/merchant/stores", tags=["merchant stores"])


def _actor(principal: Principal, ip: str | None) -> store_service.Actor:
    return store_service.Actor(user_id=principal.user_id, ip_address=ip)


@router.get("", response_model=Page[StoreRead], responses=problem_responses(422))
def list_stores(
    session: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[StoreRead]:
    """My stores, oldest first."""
    items, total = store_service.list_stores(
        session, principal=principal, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post("", status_code=201, response_model=StoreCreatedRead, responses=problem_responses(422))
def create_store(
    data: StoreCreate, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> StoreCreatedRead:
    """A new store: the private key and callback secret are in this answer only.

    It takes orders once an admin has set its commission and enabled its traffic.
    """
    created = store_service.create_store(
        session, merchant_id=principal.profile_id, data=data, actor=_actor(principal, ip)
    )
    return StoreCreatedRead(
        **created.store.model_dump(),
        private_api_key=created.private_api_key,
        callback_secret=created.callback_secret,
    )


@router.get("/{store_id}", response_model=StoreRead, responses=problem_responses(404, 422))
def get_store(store_id: PathId, session: DbSession, principal: CurrentPrincipal) -> StoreRead:
    return store_service.get_store(session, principal=principal, store_id=store_id)


@router.patch("/{store_id}", response_model=StoreChangeRead, responses=problem_responses(404, 422))
def update_store(
    store_id: PathId,
    data: StoreUpdate,
    session: DbSession,
    principal: CurrentPrincipal,
    ip: ClientIp,
) -> StoreChangeRead:
    """Change settings; traffic, access, currencies, commissions and keys are refused (422)."""
    view, changed = store_service.update_store(
        session, principal=principal, store_id=store_id, data=data, actor=_actor(principal, ip)
    )
    return StoreChangeRead(**view.model_dump(), changed=changed)


@router.post(
    "/{store_id}/deactivate", response_model=StoreChangeRead, responses=problem_responses(404, 422)
)
def deactivate_store(
    store_id: PathId, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> StoreChangeRead:
    """Switch the store off (no delete: orders and money history refer to it)."""
    view, changed = store_service.deactivate_store(
        session, principal=principal, store_id=store_id, actor=_actor(principal, ip)
    )
    return StoreChangeRead(**view.model_dump(), changed=changed)


@router.post(
    "/{store_id}/keys/rotate", response_model=StoreKeysRead, responses=problem_responses(404, 422)
)
def rotate_keys(
    store_id: PathId, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> StoreKeysRead:
    """A new key pair, shown once; the old pair is refused (401) from this moment."""
    store = store_service.visible_store(session, principal=principal, store_id=store_id)
    rotated = store_service.rotate_keys(session, store=store, actor=_actor(principal, ip))
    return StoreKeysRead.model_validate(rotated)


@router.post(
    "/{store_id}/callback-secret/rotate",
    response_model=CallbackSecretRead,
    responses=problem_responses(404, 422),
)
def rotate_callback_secret(
    store_id: PathId, session: DbSession, principal: CurrentPrincipal, ip: ClientIp
) -> CallbackSecretRead:
    """A new callback signing secret, shown once; it signs every attempt from now on."""
    store = store_service.visible_store(session, principal=principal, store_id=store_id)
    secret = store_service.rotate_callback_secret(session, store=store, actor=_actor(principal, ip))
    return CallbackSecretRead(store_id=store.id, callback_secret=secret)
