"""The public gateway routes (prefix `/gateway`).

Every route authenticates the store by API key and request signature (`CurrentStore`), except the
payer's confirm, whose capability is the unguessable public order id. Intake requires an
`Idempotency-Key` and is rate limited per store (`RATE_LIMIT_GATEWAY_INIT`). The request's session
commits before the response leaves; any error rolls it back, so a 4xx writes nothing.

JSON numbers in request bodies are parsed straight into `Decimal`, as on every server
(`api_routers.routing.LosslessJSONRoute`), and the two intake routes run their whole request in one
trip to the threadpool (`routes.OneTripIntakeRoute`, explained in `api_routers/gateway/routes.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.responses import JSONResponse

from jivapay.api_routers import uploads
from jivapay.api_routers.auth import signed_path
from jivapay.api_routers.deps import (
    ClientIp,
    CurrentStore,
    DbSession,
    IdempotencyKeyHeader,
    client_ip,
)
from jivapay.api_routers.gateway.payer_page import reject_cross_site
from jivapay.api_routers.gateway.routes import OneTripIntakeRoute
from jivapay.api_routers.idempotent import idempotent_response
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.enums import OrderType
from jivapay.middleware.rate_limiting import KeyKind, rate_limit
from jivapay.schemas.gateway import (
    IntakeRead,
    OrderActionRequest,
    OrderStatusRead,
    PayerConfirmRead,
    PayInCreate,
    PayOutCreate,
    ReferenceMethodsRead,
)
from jivapay.security import StorePrincipal
from jivapay.services import gateway_service, idempotency
from jivapay.services.document_service import FileUpload
from jivapay.services.gateway_service import IntakeResult

router = LosslessJSONRouter(prefix="/gateway", tags=["gateway"])


async def _raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]
OrderIdPath = Annotated[str, Path(min_length=1, max_length=64, description="The order's public id")]
ReceiptUpload = Annotated[FileUpload | None, Depends(uploads.receipt_upload)]
Endpoint = Callable[..., JSONResponse]
_INIT_LIMIT = [Depends(rate_limit("RATE_LIMIT_GATEWAY_INIT", key=KeyKind.STORE))]
# Each route lists the errors it can answer beyond those `responses.document_problems` adds
# everywhere (401 for the store's credentials, 404 on a path naming an order, 413, 422, 429).
# Every store-authenticated route can answer 403: the store's access may be disabled.
_INTAKE_PROBLEMS = problem_responses(400, 403, 409, 503)  # idempotency key, switches, rate
_STATUS_PROBLEMS = problem_responses(403)
_CANCEL_PROBLEMS = problem_responses(403, 409)
_FILE_PROBLEMS = problem_responses(400, 403, 409, 415, 502, 503)  # multipart, S3


def _intake_route(path: str, *, summary: str) -> Callable[[Endpoint], Endpoint]:
    """Register an intake endpoint on `router`, served by `OneTripIntakeRoute`."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            status_code=201,
            response_model=IntakeRead,
            dependencies=_INIT_LIMIT,
            responses=_INTAKE_PROBLEMS,
            summary=summary,
            route_class_override=OneTripIntakeRoute,
        )
        return endpoint

    return register


def _run_intake(
    session: DbSession,
    *,
    store: StorePrincipal,
    key: str,
    request: Request,
    body: bytes,
    create: Callable[[], IntakeResult],
) -> JSONResponse:
    return idempotent_response(
        session,
        store_id=store.store_id,
        key=key,
        fingerprint=idempotency.request_fingerprint(
            method=request.method, path=signed_path(request), body=body
        ),
        read=IntakeRead,
        status_code=201,
        produce=create,
        # Claimed with the store's authentication on the one-trip route; None: claim it now.
        claim=idempotency.loaded_claim(store.loaded),
    )


@_intake_route("/payin/init", summary="Create a PayIn")
def payin_init(
    store: CurrentStore,
    key: IdempotencyKeyHeader,
    data: PayInCreate,
    session: DbSession,
    request: Request,
    body: RawBody,
) -> JSONResponse:
    return _run_intake(
        session,
        store=store,
        key=key,
        request=request,
        body=body,
        create=lambda: gateway_service.create_payin(
            session, store=store, data=data, ip_address=client_ip(request)
        ),
    )


@_intake_route("/payout/init", summary="Create a PayOut")
def payout_init(
    store: CurrentStore,
    key: IdempotencyKeyHeader,
    data: PayOutCreate,
    session: DbSession,
    request: Request,
    body: RawBody,
) -> JSONResponse:
    return _run_intake(
        session,
        store=store,
        key=key,
        request=request,
        body=body,
        create=lambda: gateway_service.create_payout(
            session, store=store, data=data, ip_address=client_ip(request)
        ),
    )


def _status(
    store: StorePrincipal, session: DbSession, order_id: str, kind: OrderType
) -> OrderStatusRead:
    return gateway_service.get_order_status(
        session, store_id=store.store_id, public_id=order_id, order_type=kind
    )


@router.get("/payin/status/{order_id}", response_model=OrderStatusRead, responses=_STATUS_PROBLEMS)
def payin_status(store: CurrentStore, session: DbSession, order_id: OrderIdPath) -> OrderStatusRead:
    return _status(store, session, order_id, OrderType.PAYIN)


@router.get("/payout/status/{order_id}", response_model=OrderStatusRead, responses=_STATUS_PROBLEMS)
def payout_status(
    store: CurrentStore, session: DbSession, order_id: OrderIdPath
) -> OrderStatusRead:
    return _status(store, session, order_id, OrderType.PAYOUT)


@router.post(
    "/payin/confirm/{order_id}",
    response_model=PayerConfirmRead,
    responses=_FILE_PROBLEMS,
    summary="The payer confirms the payment (no store credentials: the order id is the capability)",
    openapi_extra=uploads.RECEIPT_OPENAPI,
    dependencies=[Depends(reject_cross_site)],
)
def payer_confirm(
    session: DbSession, order_id: OrderIdPath, receipt: ReceiptUpload, ip: ClientIp
) -> PayerConfirmRead:
    """Multipart `receipt` (JPEG/PNG/PDF) attached; required when the store says so."""
    return gateway_service.confirm_by_payer(
        session, public_id=order_id, receipt=receipt, ip_address=ip
    )


@router.post(
    "/orders/{order_id}/cancel", response_model=OrderStatusRead, responses=_CANCEL_PROBLEMS
)
def cancel_order(
    store: CurrentStore,
    session: DbSession,
    order_id: OrderIdPath,
    ip: ClientIp,
    data: OrderActionRequest | None = None,
) -> OrderStatusRead:
    return gateway_service.cancel_by_store(
        session,
        store_id=store.store_id,
        public_id=order_id,
        reason=data.reason if data else None,
        ip_address=ip,
    )


@router.post(
    "/orders/{order_id}/dispute",
    response_model=OrderStatusRead,
    responses=_FILE_PROBLEMS,
    openapi_extra=uploads.reason_and_evidence_openapi("#/components/schemas/OrderActionRequest"),
)
def dispute_order(
    store: CurrentStore,
    session: DbSession,
    order_id: OrderIdPath,
    data: Annotated[
        uploads.ReasonAndFiles, Depends(uploads.reason_and_evidence(OrderActionRequest))
    ],
    ip: ClientIp,
) -> OrderStatusRead:
    """JSON `{reason}`, or multipart with a `reason` field and up to 5 `evidence` files."""
    return gateway_service.dispute_by_store(
        session,
        store_id=store.store_id,
        public_id=order_id,
        reason=data.reason,
        evidence=data.files,
        ip_address=ip,
    )


@router.get("/reference/methods", response_model=ReferenceMethodsRead, responses=_STATUS_PROBLEMS)
def reference_methods(store: CurrentStore, session: DbSession) -> ReferenceMethodsRead:
    return gateway_service.list_methods(session, store_id=store.store_id)
