"""FastAPI authentication dependencies: the bearer-token principal, the signed store, role guards and
permission guards. The pure parts (JWT, HMAC, principals, the permission matcher) live below the
routers, in `jivapay/security.py` and `jivapay/permissions.py`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from jivapay.api_routers.responses import required_header
from jivapay.database.utils import db_session_dependency
from jivapay.enums import Role
from jivapay.middleware import rate_limiting
from jivapay.permissions import ID_PLACEHOLDER, check_permission, ensure_permission
from jivapay.security import (
    Principal,
    StorePrincipal,
    decode_access_token,
    load_principal,
    verify_store_request,
)
from jivapay.utils.exceptions import AuthenticationFailed, PermissionDenied

_bearer = HTTPBearer(auto_error=False, scheme_name="BearerToken")


def get_current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session: Annotated[Session, Depends(db_session_dependency, scope="function")],
) -> Principal:
    """FastAPI dependency: the user behind the bearer token, re-checked against the database."""
    if credentials is None:
        raise AuthenticationFailed("Not authenticated")
    claims = decode_access_token(credentials.credentials)
    principal = load_principal(
        session, user_id=claims.user_id, role=claims.role, token_version=claims.token_version
    )
    request.state.principal = principal
    return principal


def require_role(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits only principals holding one of `roles` (else 403)."""
    allowed = frozenset(roles)

    def _require_role(
        principal: Annotated[Principal, Depends(get_current_principal)],
    ) -> Principal:
        if principal.role not in allowed:
            raise PermissionDenied("This account cannot use this API")
        return principal

    return _require_role


def require_permission(required: str, *, id_param: str = "id") -> Callable[..., Principal]:
    """A dependency admitting principals that hold `required`.

    A `{id}` in `required` is filled from the path parameter `id_param` of the request.
    """

    def _require_permission(
        request: Request,
        principal: Annotated[Principal, Depends(get_current_principal)],
    ) -> Principal:
        target = request.path_params.get(id_param) if ID_PLACEHOLDER in required else None
        ensure_permission(principal, required, target)
        return principal

    # Read by tests and docs: which permission guards a route (see the staff authorization matrix).
    _require_permission.required_permission = required  # type: ignore[attr-defined]
    return _require_permission


def require_any_permission(*required: str, id_param: str = "id") -> Callable[..., Principal]:
    """A dependency admitting principals that hold at least one of `required` (else 403).

    A `{id}` in a permission is filled from the path parameter `id_param` of the request.
    """

    def _require_any_permission(
        request: Request,
        principal: Annotated[Principal, Depends(get_current_principal)],
    ) -> Principal:
        target = request.path_params.get(id_param)
        if any(check_permission(principal, p, target) for p in required):
            return principal
        raise PermissionDenied("Missing permission " + " or ".join(required))

    _require_any_permission.required_permissions = required  # type: ignore[attr-defined]
    return _require_any_permission


_SIGNED_PATH = "jivapay.signed_path"


def signed_path(request: Request) -> str:
    """The path a store signs: the URL path, plus "?query" when there is one.

    Kept on the ASGI scope: the signature check and the idempotency fingerprint both need it, on
    different `Request` objects, and building `request.url` parses the whole URL each time."""
    path: str | None = request.scope.get(_SIGNED_PATH)
    if path is None:
        url = request.url
        path = request.scope[_SIGNED_PATH] = url.path + (f"?{url.query}" if url.query else "")
    return path


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="StoreApiKey")
# Missing or wrong, either is 401 `invalid_signature` (not FastAPI's 422), so they are optional
# parameters here and declared required in the document.
required_header(
    "X-Timestamp", {"type": "string", "pattern": "^[0-9]{1,12}$"}, "Unix seconds, within ±300 s"
)
required_header(
    "X-Signature",
    {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
    'Hex HMAC-SHA256 of "{timestamp}.{METHOD}.{path}.{raw body}" keyed by the private key',
)


async def get_current_store(
    request: Request,
    session: Annotated[Session, Depends(db_session_dependency, scope="function")],
    api_key: Annotated[str | None, Depends(_api_key_header)],
    x_timestamp: Annotated[str | None, Header()] = None,
    x_signature: Annotated[str | None, Header()] = None,
) -> StorePrincipal:
    """FastAPI dependency: the store whose signature over this request is valid."""
    # Starlette caches the body on the request, so the endpoint can still read it afterwards.
    body = await request.body()
    # One trip to the threadpool for both the database read and the Redis count.
    return await run_in_threadpool(
        authenticate_store,
        request,
        session,
        body,
        api_key=api_key,
        timestamp=x_timestamp,
        signature=x_signature,
    )


def authenticate_store(
    request: Request,
    session: Session,
    body: bytes,
    *,
    api_key: str | None,
    timestamp: str | None,
    signature: str | None,
    columns: Sequence[ColumnElement[Any]] = (),
    parameters: Mapping[str, Any] | None = None,
) -> StorePrincipal:
    """The store whose signature over `request` is valid, counted against its rate limits
    (blocking: a database read and a Redis round trip). A failure counts against the caller's IP,
    never against the store the key names, and a 429 replaces the 401 when one is due. `columns`
    (with their bound `parameters`) are read along with the store's keys
    (`verify_store_request`)."""
    request.state.authenticates_store = True
    try:
        store = verify_store_request(
            session,
            api_key=api_key,
            timestamp=timestamp,
            signature=signature,
            method=request.method,
            path=signed_path(request),
            body=body,
            columns=columns,
            parameters=parameters,
        )
    except AuthenticationFailed:
        rate_limiting.store_authentication_failed(request)
        raise
    request.state.store = store
    rate_limiting.store_authenticated(request, store.store_id)
    return store
