"""Staff fraud-list routes: block and allow lists of the fraud checks (admin grants)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Depends, Query

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import DbSession, PageParams, PathId
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.api_routers.staff.common import Staff
from jivapay.enums import FraudListKind, FraudListType
from jivapay.permissions import Permission
from jivapay.schemas.common import Page
from jivapay.schemas.staff import FraudListEntryCreate, FraudListEntryRead, OptionalReasonIn
from jivapay.services import staff_operations, staff_queries
from jivapay.services.fraud_lists import FraudListEntry

router = LosslessJSONRouter(tags=["staff: fraud lists"])


def _read(entry: FraudListEntry) -> FraudListEntryRead:
    return FraudListEntryRead(
        id=entry.id,
        kind=entry.kind,
        value=entry.value,
        list_type=entry.list_type,
        reason=entry.reason,
        created_by_user_id=entry.created_by_user_id,
        created_at=entry.created_at,
    )


@router.get(
    "/fraud-lists",
    response_model=Page[FraudListEntryRead],
    dependencies=[Depends(require_permission(Permission.FRAUD_LISTS_VIEW_ALL))],
)
def list_entries(
    session: DbSession,
    page: PageParams,
    kind: Annotated[FraudListKind | None, Query()] = None,
    list_type: Annotated[FraudListType | None, Query()] = None,
    value: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> Page[FraudListEntryRead]:
    """Block and allow entries, newest first (`value` needs `kind`; a card number finds its hash)."""
    entries, total = staff_queries.fraud_list_page(
        session,
        kind=kind,
        list_type=list_type,
        value=value,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(
        items=[_read(e) for e in entries], total=total, limit=page.limit, offset=page.offset
    )


@router.post(
    "/fraud-lists",
    response_model=FraudListEntryRead,
    status_code=201,
    dependencies=[Depends(require_permission(Permission.FRAUD_LISTS_EDIT_ALL))],
    responses={409: {"description": "Already on the list"}},
)
def add_entry(body: FraudListEntryCreate, session: DbSession, ctx: Staff) -> FraudListEntryRead:
    """Add an entry; a `card_hash` value is given as the full card and stored only as its hash."""
    return _read(
        staff_operations.add_fraud_entry(
            session,
            ctx=ctx,
            kind=body.kind,
            value=body.value,
            list_type=body.list_type,
            reason=body.reason,
        )
    )


@router.delete(
    "/fraud-lists/{id}",
    response_model=FraudListEntryRead,
    dependencies=[Depends(require_permission(Permission.FRAUD_LISTS_EDIT_ALL))],
    responses={404: {"description": "No such entry"}},
)
def remove_entry(
    id: PathId,
    session: DbSession,
    ctx: Staff,
    body: Annotated[OptionalReasonIn | None, Body()] = None,
) -> FraudListEntryRead:
    """Remove an entry; answers the removed entry."""
    reason = body.reason if body is not None else None
    return _read(staff_operations.remove_fraud_entry(session, ctx=ctx, entry_id=id, reason=reason))
