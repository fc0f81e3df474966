"""Staff balance routes: store and trader balances and their history, the platform's balance and
profit (admin grant), deposits, withdrawals and signed adjustments (admin grant).

Every money move requires an `Idempotency-Key` scoped to the acting user: the same key and body
replay the first answer (`Idempotent-Replayed: true`), another body is 422
`idempotency_key_reused`, a request still running with the key is 409."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import MAX_ID, DbSession, IdempotencyKeyHeader, PageParams, PathId
from jivapay.api_routers.idempotent import idempotent_response
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.api_routers.staff.common import Staff
from jivapay.enums import BalanceOperation
from jivapay.permissions import Permission
from jivapay.schemas.common import Page
from jivapay.schemas.staff import (
    AccountBalanceRead,
    BalanceAdjustIn,
    BalanceChangeRead,
    BalanceHistoryRead,
    BalanceMoveIn,
    PlatformBalanceRead,
)
from jivapay.services import idempotency, staff_balances, staff_operations

router = LosslessJSONRouter(tags=["staff: balances"])

_VIEW = [Depends(require_permission(Permission.BALANCES_VIEW_ALL))]
_ADJUST = [Depends(require_permission(Permission.BALANCES_ADJUST_ALL))]
_PLATFORM = [Depends(require_permission(Permission.BALANCES_VIEW_PLATFORM))]
_MONEY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "idempotency_key_required or idempotency_key_invalid"},
    404: {"description": "No such store, trader or currency"},
    409: {"description": "idempotency_key_in_progress"},
    422: {"description": "Invalid amount, insufficient_balance or idempotency_key_reused"},
}
Crypto = Annotated[str | None, Query(min_length=1, max_length=16)]
From = Annotated[datetime | None, Query()]
To = Annotated[datetime | None, Query()]
Operation = Annotated[BalanceOperation | None, Query()]


def _page(items: list[Any], total: int, page: PageParams) -> Page[Any]:
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/balances/stores", response_model=Page[AccountBalanceRead], dependencies=_VIEW)
def store_balances(
    session: DbSession,
    page: PageParams,
    store_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    merchant_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    crypto_currency: Crypto = None,
) -> Page[AccountBalanceRead]:
    """Store balances: balance, frozen (held for open PayOuts) and available."""
    items, total = staff_balances.list_store_balances(
        session,
        store_id=store_id,
        merchant_id=merchant_id,
        crypto_currency=crypto_currency,
        limit=page.limit,
        offset=page.offset,
    )
    return _page(items, total, page)


@router.get("/balances/traders", response_model=Page[AccountBalanceRead], dependencies=_VIEW)
def trader_balances(
    session: DbSession,
    page: PageParams,
    trader_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    crypto_currency: Crypto = None,
) -> Page[AccountBalanceRead]:
    """Trader deposits: balance, frozen (held for open PayIns) and available."""
    items, total = staff_balances.list_trader_balances(
        session,
        trader_id=trader_id,
        crypto_currency=crypto_currency,
        limit=page.limit,
        offset=page.offset,
    )
    return _page(items, total, page)


@router.get(
    "/balances/store/{id}/history",
    response_model=Page[BalanceHistoryRead],
    dependencies=_VIEW,
    responses={404: {"description": "No such store"}},
)
def store_history(
    id: PathId,
    session: DbSession,
    page: PageParams,
    operation: Operation = None,
    crypto_currency: Crypto = None,
    created_from: From = None,
    created_to: To = None,
) -> Page[BalanceHistoryRead]:
    """A store's balance history, newest first."""
    search = staff_balances.HistorySearch(operation, crypto_currency, created_from, created_to)
    items, total = staff_balances.store_balance_history(
        session, store_id=id, search=search, limit=page.limit, offset=page.offset
    )
    return _page(items, total, page)


@router.get(
    "/balances/trader/{id}/history",
    response_model=Page[BalanceHistoryRead],
    dependencies=_VIEW,
    responses={404: {"description": "No such trader"}},
)
def trader_history(
    id: PathId,
    session: DbSession,
    page: PageParams,
    operation: Operation = None,
    crypto_currency: Crypto = None,
    created_from: From = None,
    created_to: To = None,
) -> Page[BalanceHistoryRead]:
    """A trader's deposit history, newest first."""
    search = staff_balances.HistorySearch(operation, crypto_currency, created_from, created_to)
    items, total = staff_balances.trader_balance_history(
        session, trader_id=id, search=search, limit=page.limit, offset=page.offset
    )
    return _page(items, total, page)


@router.get("/platform/balance", response_model=list[PlatformBalanceRead], dependencies=_PLATFORM)
def platform_balance(session: DbSession) -> list[PlatformBalanceRead]:
    """The platform's balance per crypto currency, with profit and adjustment totals."""
    return staff_balances.platform_balances(session)


@router.get(
    "/platform/balance/history",
    response_model=Page[BalanceHistoryRead],
    dependencies=_PLATFORM,
)
def platform_history(
    session: DbSession,
    page: PageParams,
    operation: Operation = None,
    crypto_currency: Crypto = None,
    created_from: From = None,
    created_to: To = None,
) -> Page[BalanceHistoryRead]:
    """The platform's profit per order (`commission`) and its adjustments, newest first."""
    search = staff_balances.HistorySearch(operation, crypto_currency, created_from, created_to)
    items, total = staff_balances.platform_balance_history(
        session, search=search, limit=page.limit, offset=page.offset
    )
    return _page(items, total, page)


def _changed(move: staff_operations.MoneyMove) -> BalanceChangeRead:
    return BalanceChangeRead(
        account=move.account,
        account_id=move.account_id,
        crypto_currency=move.crypto_currency,
        amount=move.amount,
        balance=move.balance,
        frozen=move.frozen,
        available=move.balance - move.frozen,
        history_id=move.history_id,
    )


def _idempotent_move(
    session: DbSession,
    *,
    ctx: staff_operations.StaffContext,
    key: str,
    request: Request,
    body: BalanceMoveIn | BalanceAdjustIn,
    run: Callable[[], staff_operations.MoneyMove],
) -> JSONResponse:
    """Run a money move once per (acting user, key); a repeat replays the stored answer."""
    return idempotent_response(
        session,
        user_id=ctx.principal.user_id,
        key=key,
        # The parsed body, canonically serialised: whitespace or key order do not make a new request.
        fingerprint=idempotency.request_fingerprint(
            method=request.method,
            path=request.url.path,
            body=body.model_dump_json().encode(),
        ),
        read=BalanceChangeRead,
        status_code=200,
        produce=lambda: _changed(run()),
    )


def _move_route(
    account: Literal["trader", "store"], direction: Literal["deposit", "withdraw"]
) -> None:
    plural = f"{account}s"

    def move(
        id: PathId,
        body: BalanceMoveIn,
        key: IdempotencyKeyHeader,
        request: Request,
        session: DbSession,
        ctx: Staff,
    ) -> JSONResponse:
        return _idempotent_move(
            session,
            ctx=ctx,
            key=key,
            request=request,
            body=body,
            run=lambda: staff_operations.move_balance(
                session,
                ctx=ctx,
                account=account,
                direction=direction,
                account_id=id,
                crypto_currency=body.crypto_currency,
                amount=body.amount,
                reason=body.reason,
            ),
        )

    move.__name__ = f"{direction}_{account}"
    move.__doc__ = (
        f"{'Add to' if direction == 'deposit' else 'Take from'} a {account}'s "
        f"{'deposit' if account == 'trader' else 'balance'}"
        + ("" if direction == "deposit" else " (at most the available amount)")
        + "; recorded with the reason. Requires `Idempotency-Key`."
    )
    router.add_api_route(
        f"/balances/{plural}/{{id}}/{direction}",
        move,
        methods=["POST"],
        response_model=BalanceChangeRead,
        dependencies=_ADJUST,
        responses=_MONEY_ERRORS,
    )


for _account in ("trader", "store"):
    for _direction in ("deposit", "withdraw"):
        _move_route(_account, _direction)


@router.post(
    "/balances/adjust",
    response_model=BalanceChangeRead,
    dependencies=_ADJUST,
    responses=_MONEY_ERRORS,
)
def adjust(
    body: BalanceAdjustIn,
    key: IdempotencyKeyHeader,
    request: Request,
    session: DbSession,
    ctx: Staff,
) -> JSONResponse:
    """A signed, non-zero manual correction of a store, trader or platform balance. Requires
    `Idempotency-Key`."""
    return _idempotent_move(
        session,
        ctx=ctx,
        key=key,
        request=request,
        body=body,
        run=lambda: staff_operations.adjust_balance(
            session,
            ctx=ctx,
            account=body.account,
            account_id=body.account_id,
            crypto_currency=body.crypto_currency,
            amount=body.amount,
            reason=body.reason,
        ),
    )
