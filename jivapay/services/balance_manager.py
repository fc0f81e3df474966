"""Balance changes and their history rows (docs/money.md).

This module owns every write to `balance_stores`, `balance_traders` and `balance_platform`. So far it
holds the admin-side moves (deposits, withdrawals and signed manual adjustments, each with the acting
admin and a required reason) and the order moves: holds frozen at intake or assignment, released on
cancel, expiry or failure, and the completion moves of PayIn and PayOut.

Every change locks the balance row (created on first use), refuses to take the available amount
(`balance - frozen`) below zero, and writes the matching history row in the same transaction with
`balance_after`/`frozen_after`, so a balance always equals the sum of its history. Services flush;
the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    DateTime,
    Insert,
    String,
    Table,
    bindparam,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from jivapay.database.base import CRYPTO, utcnow
from jivapay.database.models import (
    BalancePlatform,
    BalancePlatformHistory,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    BalanceTraderFiat,
    BalanceTraderFiatHistory,
    CryptoCurrency,
    MerchantStore,
    OrderHistory,
    Trader,
    User,
)
from jivapay.database.utils import integrity_errors_as_domain_errors, lock_or_create
from jivapay.enums import BalanceOperation, OrderType
from jivapay.money import Commissions, completion_legs
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import (
    InsufficientBalance,
    InvariantViolation,
    NotFound,
    ValidationFailed,
)

AccountKind = Literal["store", "trader", "platform"]

_QUANTUM = Decimal("0.00000001")
# NUMERIC(20, 8) holds at most 12 integer digits.
_MAX_AMOUNT = Decimal("1000000000000")
_MAX_REASON = 2000


@dataclass(frozen=True)
class BalanceChange:
    """The outcome of one balance change."""

    balance_id: int
    balance_after: Decimal
    frozen_after: Decimal
    history_id: int


# --------------------------------------------------------------------------- public functions


def deposit_trader_balance(
    session: Session,
    *,
    trader_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    actor_user_id: int | None,
    reason: str,
    ip_address: str | None = None,
) -> BalanceChange:
    """Add `amount` to a trader's crypto deposit."""
    return _change(
        session,
        account="trader",
        account_id=trader_id,
        crypto_currency_id=crypto_currency_id,
        delta=_positive(amount),
        operation=BalanceOperation.DEPOSIT,
        actor_user_id=actor_user_id,
        reason=reason,
        ip_address=ip_address,
    )


def withdraw_trader_balance(
    session: Session,
    *,
    trader_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    actor_user_id: int | None,
    reason: str,
    ip_address: str | None = None,
) -> BalanceChange:
    """Take `amount` from a trader's available crypto deposit."""
    return _change(
        session,
        account="trader",
        account_id=trader_id,
        crypto_currency_id=crypto_currency_id,
        delta=-_positive(amount),
        operation=BalanceOperation.WITHDRAWAL,
        actor_user_id=actor_user_id,
        reason=reason,
        ip_address=ip_address,
    )


def deposit_store_balance(
    session: Session,
    *,
    store_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    actor_user_id: int | None,
    reason: str,
    ip_address: str | None = None,
) -> BalanceChange:
    """Add `amount` to a store's crypto balance."""
    return _change(
        session,
        account="store",
        account_id=store_id,
        crypto_currency_id=crypto_currency_id,
        delta=_positive(amount),
        operation=BalanceOperation.DEPOSIT,
        actor_user_id=actor_user_id,
        reason=reason,
        ip_address=ip_address,
    )


def withdraw_store_balance(
    session: Session,
    *,
    store_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    actor_user_id: int | None,
    reason: str,
    ip_address: str | None = None,
) -> BalanceChange:
    """Take `amount` from a store's available crypto balance."""
    return _change(
        session,
        account="store",
        account_id=store_id,
        crypto_currency_id=crypto_currency_id,
        delta=-_positive(amount),
        operation=BalanceOperation.WITHDRAWAL,
        actor_user_id=actor_user_id,
        reason=reason,
        ip_address=ip_address,
    )


def adjust_balance(
    session: Session,
    *,
    account: AccountKind,
    account_id: int | None,
    crypto_currency_id: int,
    amount: Decimal,
    actor_user_id: int | None,
    reason: str,
    ip_address: str | None = None,
) -> BalanceChange:
    """Apply a signed manual correction; `account_id` is ignored for the platform account."""
    if account not in ("store", "trader", "platform"):
        raise ValidationFailed(f"unknown balance account kind: {account!r}")
    if account != "platform" and account_id is None:
        raise ValidationFailed("account_id is required for store and trader balances")
    delta = _valid_amount(amount)
    if delta == 0:
        raise ValidationFailed("an adjustment must not be zero")
    return _change(
        session,
        account=account,
        account_id=account_id,
        crypto_currency_id=crypto_currency_id,
        delta=delta,
        operation=BalanceOperation.ADJUSTMENT,
        actor_user_id=actor_user_id,
        reason=reason,
        ip_address=ip_address,
    )


# --------------------------------------------------------------------------- validation


def _valid_amount(amount: Any) -> Decimal:
    if isinstance(amount, bool) or not isinstance(amount, Decimal):
        raise ValidationFailed("amount must be a Decimal")
    if not amount.is_finite():
        raise ValidationFailed("amount must be a finite number")
    if abs(amount) >= _MAX_AMOUNT:
        raise ValidationFailed("amount is too large")
    try:
        exact = amount == amount.quantize(_QUANTUM)
    except InvalidOperation as exc:
        raise ValidationFailed("amount is not a valid number") from exc
    if not exact:
        raise ValidationFailed("amount must have at most 8 decimal places")
    return amount


def _positive(amount: Any) -> Decimal:
    value = _valid_amount(amount)
    if value <= 0:
        raise ValidationFailed("amount must be greater than zero")
    return value


def _valid_reason(reason: Any) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise ValidationFailed("a reason is required for a manual balance change")
    if len(text) > _MAX_REASON:
        raise ValidationFailed(f"reason must be at most {_MAX_REASON} characters")
    return text


def _check_references(
    session: Session,
    *,
    account: AccountKind,
    account_id: int | None,
    crypto_currency_id: int,
    actor_user_id: int | None,
) -> None:
    if session.get(CryptoCurrency, crypto_currency_id) is None:
        raise NotFound(f"crypto currency {crypto_currency_id} not found")
    if account == "trader" and session.get(Trader, account_id) is None:
        raise NotFound(f"trader {account_id} not found")
    if account == "store" and session.get(MerchantStore, account_id) is None:
        raise NotFound(f"store {account_id} not found")
    if actor_user_id is not None and session.get(User, actor_user_id) is None:
        raise NotFound(f"user {actor_user_id} not found")


# --------------------------------------------------------------------------- the one write path


def _change(
    session: Session,
    *,
    account: AccountKind,
    account_id: int | None,
    crypto_currency_id: int,
    delta: Decimal,
    operation: BalanceOperation,
    actor_user_id: int | None,
    reason: str,
    ip_address: str | None = None,
) -> BalanceChange:
    reason = _valid_reason(reason)
    _check_references(
        session,
        account=account,
        account_id=account_id,
        crypto_currency_id=crypto_currency_id,
        actor_user_id=actor_user_id,
    )
    row: BalanceStore | BalanceTrader | BalancePlatform
    if account == "trader":
        row = lock_or_create(
            session,
            BalanceTrader,
            {"trader_id": account_id, "crypto_currency_id": crypto_currency_id},
        )
    elif account == "store":
        row = lock_or_create(
            session,
            BalanceStore,
            {"store_id": account_id, "crypto_currency_id": crypto_currency_id},
        )
    else:
        row = lock_or_create(session, BalancePlatform, {"crypto_currency_id": crypto_currency_id})

    frozen = getattr(row, "frozen", Decimal("0"))
    new_balance = row.balance + delta
    if abs(new_balance) >= _MAX_AMOUNT:
        # Otherwise the NUMERIC(20, 8) column overflows: a database error (a 500), not an answer.
        raise ValidationFailed("the balance would exceed the largest amount it can hold")
    # Credits always pass (a negative platform balance may be corrected upwards); debits must be
    # covered by what is not held for open orders.
    if delta < 0 and new_balance - frozen < 0:
        available, requested = format(row.balance - frozen, "f"), format(-delta, "f")
        raise InsufficientBalance(
            f"available balance {available} does not cover {requested}",
            extra={"available": available, "requested": requested},
        )
    row.balance = new_balance

    history: BalanceStoreHistory | BalanceTraderCryptoHistory | BalancePlatformHistory
    common: dict[str, Any] = {
        "operation": operation.value,
        "amount": delta,
        "balance_after": new_balance,
        "actor_user_id": actor_user_id,
        "reason": reason,
        "incoming_order_id": None,
        "order_id": None,
    }
    if isinstance(row, BalanceTrader):
        history = BalanceTraderCryptoHistory(
            balance_trader_id=row.id, frozen_after=frozen, **common
        )
    elif isinstance(row, BalanceStore):
        history = BalanceStoreHistory(balance_store_id=row.id, frozen_after=frozen, **common)
    else:
        history = BalancePlatformHistory(balance_platform_id=row.id, **common)
    session.add(history)
    session.flush()

    log_event(
        session,
        user_id=actor_user_id,
        action=f"balance.{operation.value}",
        target_entity=f"balance_{account}",
        target_id=str(row.id),
        details={
            "account": account,
            "account_id": account_id,
            "crypto_currency_id": crypto_currency_id,
            "amount": str(delta),
            "balance_after": str(new_balance),
            "frozen_after": str(frozen),
            "history_id": history.id,
            "reason": reason,
        },
        ip_address=ip_address,
    )
    return BalanceChange(
        balance_id=row.id,
        balance_after=new_balance,
        frozen_after=frozen,
        history_id=history.id,
    )


# --------------------------------------------------------------------------- order holds and moves
#
# Order money moves reference the order by its intake id; the unique key (account, incoming order,
# operation) of every history table turns a second completion (or a second freeze or release) into
# an IntegrityError instead of a second payment. Balance rows are locked in one fixed order:
# store balance, trader deposit, platform, trader fiat.


def _order_history_row(
    row: BalanceStore | BalanceTrader,
    *,
    operation: BalanceOperation,
    amount: Decimal,
    frozen_delta: Decimal,
    incoming_order_id: int,
    order_id: int | None,
) -> BalanceStoreHistory | BalanceTraderCryptoHistory:
    common: dict[str, Any] = {
        "operation": operation.value,
        "amount": amount,
        "frozen_delta": frozen_delta,
        "balance_after": row.balance,
        "frozen_after": row.frozen,
        "incoming_order_id": incoming_order_id,
        "order_id": order_id,
    }
    if isinstance(row, BalanceStore):
        return BalanceStoreHistory(balance_store_id=row.id, **common)
    return BalanceTraderCryptoHistory(balance_trader_id=row.id, **common)


def _lock_store(session: Session, store_id: int, crypto_currency_id: int) -> BalanceStore:
    return lock_or_create(
        session, BalanceStore, {"store_id": store_id, "crypto_currency_id": crypto_currency_id}
    )


def _lock_trader(session: Session, trader_id: int, crypto_currency_id: int) -> BalanceTrader:
    return lock_or_create(
        session, BalanceTrader, {"trader_id": trader_id, "crypto_currency_id": crypto_currency_id}
    )


# A hold's bound parameters are named `freeze_*`: the assignment writes its trader hold in a
# statement with other INSERTs and UPDATEs, which would take a parameter named like one of their
# columns (`hold_amount`, `order_id`, `created_at` ...) into their column lists.
_FREEZE_PREFIX = "freeze_"


def _freeze_statement(
    model: type[BalanceStore] | type[BalanceTrader],
    owner_columns: tuple[str, ...],
    order_id: ColumnElement[int] | None = None,
) -> Insert:
    """The hold as one statement: a guarded UPDATE of `frozen` (the check and the change, under
    the row lock it takes) feeding the history INSERT through its RETURNING, so the history row is
    written exactly when the balance changed, with the numbers after it; it returns the account's
    id, and no row when the available balance did not cover the amount. Every value is a bound
    parameter (`freeze_owner_<column>`, `freeze_amount`, `freeze_incoming_order_id`,
    `freeze_order_id`, `freeze_created_at`; `_freeze_parameters`), except `order_id` when a
    caller's statement gives it (the order row it inserts): built once, an execution only binds
    them, where building and cache-keying the statement anew cost most of a hold's Python time."""
    table = cast(Table, model.__table__)
    amount = bindparam(_FREEZE_PREFIX + "amount", type_=CRYPTO)
    changed = (
        update(table)
        .where(
            *(
                table.c[column] == bindparam(f"{_FREEZE_PREFIX}owner_{column}")
                for column in owner_columns
            ),
            table.c.balance - table.c.frozen >= amount,
        )
        .values(frozen=table.c.frozen + amount)
        .returning(table.c.id, table.c.balance, table.c.frozen)
        .cte("changed")
    )
    history_model = BalanceStoreHistory if model is BalanceStore else BalanceTraderCryptoHistory
    history = cast(Table, history_model.__table__)
    account_column = "balance_store_id" if model is BalanceStore else "balance_trader_id"
    return (
        insert(history)
        .from_select(
            [
                account_column,
                "operation",
                "amount",
                "frozen_delta",
                "balance_after",
                "frozen_after",
                "incoming_order_id",
                "order_id",
                "created_at",
            ],
            select(
                changed.c.id,
                literal(BalanceOperation.FREEZE.value, String),
                literal(Decimal(0), CRYPTO),
                amount,
                changed.c.balance,
                changed.c.frozen,
                bindparam(_FREEZE_PREFIX + "incoming_order_id", type_=BigInteger),
                (
                    order_id
                    if order_id is not None
                    else bindparam(_FREEZE_PREFIX + "order_id", type_=BigInteger)
                ),
                bindparam(_FREEZE_PREFIX + "created_at", type_=DateTime(timezone=True)),
            ),
        )
        .returning(history.c[account_column].label("account_id"))
    )


# `_freeze_statement` per (account kind, owner columns), built on first use.
_FREEZE_STATEMENTS: dict[tuple[Any, tuple[str, ...]], Executable] = {}


def _freeze_parameters(
    owner: dict[str, int], *, amount: Decimal, incoming_order_id: int, order_id: int | None
) -> dict[str, object]:
    if amount <= 0:
        raise ValidationFailed("a hold must be positive")
    return {
        **{f"{_FREEZE_PREFIX}owner_{column}": value for column, value in owner.items()},
        _FREEZE_PREFIX + "amount": amount,
        _FREEZE_PREFIX + "incoming_order_id": incoming_order_id,
        _FREEZE_PREFIX + "order_id": order_id,
        _FREEZE_PREFIX + "created_at": utcnow(),
    }


def _frozen(
    session: Session,
    model: type[BalanceStore] | type[BalanceTrader],
    owner: dict[str, int],
    *,
    amount: Decimal,
    account_id: int | None,
) -> None:
    """After a hold's statement: `InsufficientBalance` when it froze nothing (`account_id` None),
    else the account's objects in the session are expired (they hold the numbers before it)."""
    if account_id is None:
        conditions = [getattr(model, column) == value for column, value in owner.items()]
        current = session.execute(select(model.balance - model.frozen).where(*conditions)).scalar()
        # `format(…, "f")`: a zero NUMERIC(20, 8) would read 0E-8 as `str`.
        available = format(current if current is not None else Decimal(0), "f")
        requested = format(amount, "f")
        raise InsufficientBalance(
            f"available balance {available} does not cover {requested}",
            extra={"available": available, "requested": requested},
        )
    for obj in list(session.identity_map.values()):
        if isinstance(obj, model) and obj.id == account_id:
            session.expire(obj)


def _freeze(
    session: Session,
    model: type[BalanceStore] | type[BalanceTrader],
    owner: dict[str, int],
    *,
    amount: Decimal,
    incoming_order_id: int,
    order_id: int | None,
) -> None:
    """Raise `frozen` by `amount` if the available balance covers it, and write the history row,
    in one round trip (`_freeze_statement`): a hold is on the hot paths (intake, assignment)."""
    parameters = _freeze_parameters(
        owner, amount=amount, incoming_order_id=incoming_order_id, order_id=order_id
    )
    key = (model, tuple(owner))
    statement = _FREEZE_STATEMENTS.get(key)
    if statement is None:
        statement = _FREEZE_STATEMENTS[key] = _freeze_statement(*key)
    account_id = session.execute(statement, parameters).scalar()
    _frozen(session, model, owner, amount=amount, account_id=account_id)


def _release(
    session: Session,
    row: BalanceStore | BalanceTrader,
    *,
    amount: Decimal,
    incoming_order_id: int,
    order_id: int | None,
) -> None:
    if amount <= 0 or row.frozen < amount:
        raise InvariantViolation(f"cannot release {amount}: only {row.frozen} is frozen")
    row.frozen -= amount
    session.add(
        _order_history_row(
            row,
            operation=BalanceOperation.RELEASE,
            amount=Decimal(0),
            frozen_delta=-amount,
            incoming_order_id=incoming_order_id,
            order_id=order_id,
        )
    )
    session.flush()


def freeze_store_hold(
    session: Session,
    *,
    store_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    incoming_order_id: int,
) -> None:
    """Freeze a PayOut's `C + C*s` on the store's balance at intake (InsufficientBalance if short)."""
    _freeze(
        session,
        BalanceStore,
        {"store_id": store_id, "crypto_currency_id": crypto_currency_id},
        amount=amount,
        incoming_order_id=incoming_order_id,
        order_id=None,
    )


def release_store_hold(
    session: Session,
    *,
    store_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    incoming_order_id: int,
    order_id: int | None,
) -> None:
    """Release a PayOut's store hold (order failed, canceled or expired)."""
    row = _lock_store(session, store_id, crypto_currency_id)
    _release(session, row, amount=amount, incoming_order_id=incoming_order_id, order_id=order_id)


def freeze_trader_hold(
    session: Session,
    *,
    trader_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    incoming_order_id: int,
    order_id: int,
) -> None:
    """Freeze a PayIn's `C - C*t` on the trader's deposit at assignment."""
    _freeze(
        session,
        BalanceTrader,
        _trader_owner(trader_id, crypto_currency_id),
        amount=amount,
        incoming_order_id=incoming_order_id,
        order_id=order_id,
    )


# The same hold as a CTE of the assignment's statement (the order processor's): the hold, its
# history row and the order row it names are written in one round trip.
def _trader_owner(trader_id: int, crypto_currency_id: int) -> dict[str, int]:
    return {"trader_id": trader_id, "crypto_currency_id": crypto_currency_id}


def trader_hold_cte(order_id: ColumnElement[int]) -> CTE:
    """`freeze_trader_hold` as a data-modifying CTE (`trader_hold`) of a caller's statement, whose
    order row gives `order_id`; its one column, `account_id`, has a row exactly when the hold was
    taken. Values: `trader_hold_parameters`; then `trader_hold_taken` with what it returned."""
    return _freeze_statement(BalanceTrader, ("trader_id", "crypto_currency_id"), order_id).cte(
        "trader_hold"
    )


def trader_hold_parameters(
    *, trader_id: int, crypto_currency_id: int, amount: Decimal, incoming_order_id: int
) -> dict[str, object]:
    """The bound values of `trader_hold_cte` (`ValidationFailed` unless `amount` is positive)."""
    return _freeze_parameters(
        _trader_owner(trader_id, crypto_currency_id),
        amount=amount,
        incoming_order_id=incoming_order_id,
        order_id=None,
    )


def trader_hold_taken(
    session: Session,
    *,
    trader_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    account_id: int | None,
) -> None:
    """After the statement of `trader_hold_cte`: `InsufficientBalance` when it froze nothing."""
    owner = _trader_owner(trader_id, crypto_currency_id)
    _frozen(session, BalanceTrader, owner, amount=amount, account_id=account_id)


def release_trader_hold(
    session: Session,
    *,
    trader_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    incoming_order_id: int,
    order_id: int,
) -> None:
    """Release a PayIn's trader hold (order canceled or expired)."""
    row = _lock_trader(session, trader_id, crypto_currency_id)
    _release(session, row, amount=amount, incoming_order_id=incoming_order_id, order_id=order_id)


@dataclass(frozen=True)
class CompletionMoves:
    store: Decimal
    trader: Decimal
    platform: Decimal
    trader_fiat: Decimal


def complete_order(session: Session, *, order: OrderHistory) -> CompletionMoves:
    """Move a completed order's money: store, trader deposit, platform profit, trader fiat.

    The held side moves out of `frozen` (PayIn: the trader's deposit; PayOut: the store's balance);
    the legs sum to exactly zero (money.completion_legs). Raises IntegrityError-backed
    `DuplicateObject` if the order was already settled.
    """
    order_type = OrderType(order.order_type)
    commissions = Commissions(order.store_commission, order.trader_commission)
    legs = completion_legs(order_type, order.amount_crypto, commissions)
    if legs.total != 0:  # impossible by construction; refuse rather than create money
        raise InvariantViolation("order legs do not sum to zero")
    op = BalanceOperation.PAYIN if order_type == OrderType.PAYIN else BalanceOperation.PAYOUT
    ids = {"incoming_order_id": order.incoming_order_id, "order_id": order.id}

    store = _lock_store(session, order.store_id, order.crypto_currency_id)
    trader = _lock_trader(session, order.trader_id, order.crypto_currency_id)
    platform = lock_or_create(
        session, BalancePlatform, {"crypto_currency_id": order.crypto_currency_id}
    )
    fiat = lock_or_create(
        session,
        BalanceTraderFiat,
        {"trader_id": order.trader_id, "fiat_currency_id": order.fiat_currency_id},
    )

    held, free = (trader, store) if order_type == OrderType.PAYIN else (store, trader)
    held_leg, free_leg = (
        (legs.trader, legs.store) if order_type == OrderType.PAYIN else (legs.store, legs.trader)
    )
    if held.frozen < order.hold_amount or -held_leg != order.hold_amount:
        raise InvariantViolation(f"hold of order {order.public_id} is not in place")
    held.frozen -= order.hold_amount
    held.balance += held_leg
    free.balance += free_leg
    platform.balance += legs.platform
    fiat_delta = order.amount_fiat if order_type == OrderType.PAYIN else -order.amount_fiat
    fiat.balance += fiat_delta

    session.add_all(
        [
            _order_history_row(
                held, operation=op, amount=held_leg, frozen_delta=-order.hold_amount, **ids
            ),
            _order_history_row(free, operation=op, amount=free_leg, frozen_delta=Decimal(0), **ids),
            BalancePlatformHistory(
                balance_platform_id=platform.id,
                operation=BalanceOperation.COMMISSION.value,
                amount=legs.platform,
                balance_after=platform.balance,
                **ids,
            ),
            BalanceTraderFiatHistory(
                balance_trader_fiat_id=fiat.id,
                operation=op.value,
                amount=fiat_delta,
                balance_after=fiat.balance,
                **ids,
            ),
        ]
    )
    with integrity_errors_as_domain_errors(session):
        session.flush()
    return CompletionMoves(legs.store, legs.trader, legs.platform, fiat_delta)
