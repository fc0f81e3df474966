"""`Annotated` aliases routers declare their parameters with: the request's database session, the
current user or store, and pagination."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from jivapay.api_routers.auth import get_current_principal, get_current_store
from jivapay.api_routers.responses import required_header
from jivapay.database.utils import db_session_dependency
from jivapay.security import Principal, StorePrincipal
from jivapay.services import idempotency

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50

# scope="function": the transaction commits before the response is sent, not after.
DbSession = Annotated[Session, Depends(db_session_dependency, scope="function")]
CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]
CurrentStore = Annotated[StorePrincipal, Depends(get_current_store)]


async def idempotency_key(
    key: Annotated[str | None, Header(alias=idempotency.HEADER)] = None,
) -> str:
    """The required `Idempotency-Key` header (400 when missing or malformed)."""
    # async: a few string checks are cheaper on the event loop than a trip to the threadpool.
    return idempotency.validate_key(key)


IdempotencyKeyHeader = Annotated[str, Depends(idempotency_key)]
required_header(
    idempotency.HEADER,
    {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": idempotency.KEY_PATTERN,
    },
    "Unique per intended operation; a repeat with the same body replays the first answer",
)


@dataclass(frozen=True)
class Pagination:
    limit: int
    offset: int


def pagination(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Pagination:
    return Pagination(limit=limit, offset=offset)


PageParams = Annotated[Pagination, Depends(pagination)]


def client_ip(request: Request) -> str | None:
    """The caller's address, recorded in every audit row a request writes (routers take it from
    here, `ClientIp`, and nowhere else). uvicorn rewrites it from `X-Forwarded-For` only when the
    peer is one of `TRUSTED_PROXIES` (`servers/serving.py`); otherwise it is the peer itself."""
    return request.client.host if request.client else None


ClientIp = Annotated[str | None, Depends(client_ip)]


# A database id in a path or query: a positive BIGINT (anything else is 422, never a database error).
MAX_ID = 2**63 - 1
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def strict_query(request: Request) -> None:
    """Refuse query parameters the route does not declare (422), so a typo is never ignored."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    unknown = sorted(set(request.query_params.keys()) - _query_names(dependant))
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "Unknown query parameter",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )
