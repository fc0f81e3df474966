"""How the gateway's intake routes handle a request: the whole request in one trip to the
threadpool (`OneTripIntakeRoute`), its JSON numbers parsed straight into `Decimal` like every
route's (`api_routers.routing.LosslessJSONRoute`).

An intake (`/payin/init`, `/payout/init`) is the platform's hottest request. FastAPI would take it
to the threadpool three times (the store's verification, the endpoint, the commit) and resolve its
eight parameters and dependencies one by one: a quarter of the gateway's CPU per intake, measured
(docs/performance.md, "One trip per intake"). `OneTripIntakeRoute` keeps the endpoint's FastAPI
signature, from which the OpenAPI document is built, and resolves exactly those parameters itself,
in one worker thread, answering their errors in FastAPI's order: a body that is not JSON (422),
the store's signature and rate limits (401, 403, 429), the `Idempotency-Key` (400), the body's
model (422); then the endpoint runs and the transaction commits before the response leaves. The
statement that authenticates the store also reads what intake needs of it
(`gateway_service.INTAKE_TERMS`: switches, currencies, limits, commissions) and takes the
`Idempotency-Key`'s lock with its row (`idempotency.store_key_claim`): one round trip for the
three. The key is claimed there only when the signature was verified before the statement, with
the store's key as this process last verified it (`security.signature_verified`), so a request
with a forged signature never holds a store's key; the first intake of a store in a process (or
after its key was rotated) claims the key in a statement of its own, once its signature verifies.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import HTTPException, Request, Response
from fastapi.dependencies.utils import get_missing_field_error
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Table
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from jivapay.api_routers.auth import authenticate_store
from jivapay.api_routers.routing import LosslessJSONRequest, LosslessJSONRoute
from jivapay.database.models import MerchantStore
from jivapay.database.utils import run_request_transaction
from jivapay.security import signature_verified
from jivapay.services import gateway_service, idempotency

# What the statement authenticating an intake also reads: the store's terms, and the
# `Idempotency-Key`'s lock and row when the key is valid and the signature already verified.
_TERMS_AND_KEY_CLAIM = (
    *gateway_service.INTAKE_TERMS,
    idempotency.store_key_claim(
        cast(Table, MerchantStore.__table__).c.id, verified=signature_verified()
    ),
)

# The parameters an intake endpoint declares, which `OneTripIntakeRoute` resolves itself.
INTAKE_PARAMETERS = ("store", "key", "data", "session", "request", "body")
_ABSENT = object()  # no body at all (FastAPI's `Undefined`): the model answers "missing"


class OneTripIntakeRoute(LosslessJSONRoute):
    """An intake route: the whole request (verification, rate limits, validation, endpoint,
    commit) in one worker thread. Its endpoint must declare exactly `INTAKE_PARAMETERS`, typed as
    `api_routers.gateway.router.payin_init` types them; any other signature fails at import."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        declared = tuple(inspect.signature(endpoint).parameters)
        if sorted(declared) != sorted(INTAKE_PARAMETERS):
            raise TypeError(
                f"{endpoint.__name__} declares {declared}; an intake endpoint declares exactly "
                f"{INTAKE_PARAMETERS}, which OneTripIntakeRoute resolves itself"
            )
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        body_field = self.body_field
        assert body_field is not None, "an intake endpoint declares its body model as `data`"
        endpoint = self.endpoint

        async def one_trip_handler(plain: Request) -> Response:
            request = LosslessJSONRequest(plain.scope, plain.receive)
            body, document = await _read_body(request)
            headers = request.headers

            def run(session: Session) -> Response:
                raw_key = headers.get(idempotency.HEADER)
                lockable = idempotency.valid_key(raw_key)
                store = authenticate_store(
                    request,
                    session,
                    body,
                    api_key=headers.get("X-API-Key"),
                    timestamp=headers.get("X-Timestamp"),
                    signature=headers.get("X-Signature"),
                    columns=_TERMS_AND_KEY_CLAIM if lockable else gateway_service.INTAKE_TERMS,
                    parameters={idempotency.KEY_PARAMETER: lockable} if lockable else None,
                )
                key = idempotency.validate_key(raw_key)
                if document is _ABSENT:
                    data, errors = None, [get_missing_field_error(loc=("body",))]
                else:
                    data, errors = body_field.validate(document, {}, loc=("body",))
                if errors:
                    raise RequestValidationError(errors, body=document)
                response: Response = endpoint(
                    store=store, key=key, data=data, session=session, request=request, body=body
                )
                return response

            return await run_in_threadpool(run_request_transaction, run)

        return one_trip_handler


async def _read_body(request: LosslessJSONRequest) -> tuple[bytes, Any]:
    """The raw body, and the document FastAPI would hand the body model: 422 when JSON does not
    parse, 400 when the body cannot be read at all (as FastAPI answers both)."""
    try:
        body = await request.body()
        return body, await _json_document(request, body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ],
            body=exc.doc,
        ) from exc
    except HTTPException:
        raise
    except Exception as exc:
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


async def _json_document(request: LosslessJSONRequest, body: bytes) -> Any:
    """Parsed when the content type is JSON, the raw bytes otherwise (which the model refuses),
    `_ABSENT` when empty."""
    if not body:
        return _ABSENT
    content_type = request.headers.get("content-type")
    if not content_type:
        return body  # FastAPI's strict content type: no type, no JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        return body
    return await request.json()
