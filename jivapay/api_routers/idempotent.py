"""The HTTP side of idempotent requests: run a write once per (owner, `Idempotency-Key`) and
answer a repeat with the stored response (`Idempotent-Replayed: true`).

`services.idempotency` keeps the keys and stored answers; this module turns them into a
`JSONResponse` for the gateway's intake (owner: the store) and staff money moves (owner: the
acting user).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from jivapay.services import idempotency


def idempotent_response(
    session: Session,
    *,
    key: str,
    fingerprint: str,
    read: type[BaseModel],
    status_code: int,
    produce: Callable[[], BaseModel],
    store_id: int | None = None,
    user_id: int | None = None,
    claim: idempotency.KeyClaim | None = None,
) -> JSONResponse:
    """`produce()` serialised with `status_code` the first time; the stored answer afterwards.
    `claim`: the key's lock and row already claimed in this transaction (`run_idempotent`)."""

    def action() -> tuple[int, dict[str, Any]]:
        return status_code, produce().model_dump(mode="json")

    stored = idempotency.run_idempotent(
        session,
        store_id=store_id,
        user_id=user_id,
        key=key,
        fingerprint=fingerprint,
        action=action,
        claim=claim,
        status_code=status_code,
    )
    if not stored.replayed:  # the body `produce()` just dumped, in the model's order
        return JSONResponse(stored.body, status_code=stored.status_code)
    # Re-shaped through the model: JSONB does not keep key order, the replay should.
    content = read.model_validate(stored.body).model_dump(mode="json")
    return JSONResponse(
        content, status_code=stored.status_code, headers={"Idempotent-Replayed": "true"}
    )
