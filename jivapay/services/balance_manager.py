"""Balance changes and their history rows (domain.md §2).

This module owns every write to `balance_stores`, `balance_traders` and `balance_platform`. So far it
holds the admin-side moves: deposits, withdrawals and signed manual adjustments, each with the acting
admin and a required reason. Order holds and completion moves join it later.

Every change locks the balance row (created on first use), refuses to take the available amount
(`balance - frozen`) below zero, and writes the matching history row in the same transaction with
`balance_after`/`frozen_after`, so a balance always equals the sum of its history. Services flush;
the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy.orm import Session

from jivapay.database.models import (
    BalancePlatform,
    BalancePlatformHistory,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    CryptoCurrency,
    MerchantStore,
    Trader,
    User,
)
from jivapay.database.utils import lock_or_create
from jivapay.enums import BalanceOperation
from jivapay.utils.exceptions import InsufficientBalance, NotFound, ValidationFailed

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
    )


def withdraw_trader_balance(
    session: Session,
    *,
    trader_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    actor_user_id: int | None,
    reason: str,
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
    )


def deposit_store_balance(
    session: Session,
    *,
    store_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    actor_user_id: int | None,
    reason: str,
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
    )


def withdraw_store_balance(
    session: Session,
    *,
    store_id: int,
    crypto_currency_id: int,
    amount: Decimal,
    actor_user_id: int | None,
    reason: str,
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
    # Credits always pass (a negative platform balance may be corrected upwards); debits must be
    # covered by what is not held for open orders.
    if delta < 0 and new_balance - frozen < 0:
        raise InsufficientBalance(
            f"available balance {row.balance - frozen} does not cover {-delta}",
            extra={"available": str(row.balance - frozen), "requested": str(-delta)},
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
        history = BalanceTraderCryptoHistory(balance_trader_id=row.id, frozen_after=frozen, **common)
    elif isinstance(row, BalanceStore):
        history = BalanceStoreHistory(balance_store_id=row.id, frozen_after=frozen, **common)
    else:
        history = BalancePlatformHistory(balance_platform_id=row.id, **common)
    session.add(history)
    session.flush()

    _audit(
        session,
        actor_user_id=actor_user_id,
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
    )
    return BalanceChange(
        balance_id=row.id,
        balance_after=new_balance,
        frozen_after=frozen,
        history_id=history.id,
    )


def _audit(
    session: Session,
    *,
    actor_user_id: int | None,
    action: str,
    target_entity: str,
    target_id: str,
    details: dict[str, Any],
) -> None:
    try:
        from jivapay.services.audit_logger import log_event
    except ImportError:  # the audit service is optional until it lands
        return
    log_event(
        session,
        action=action,
        user_id=actor_user_id,
        target_entity=target_entity,
        target_id=target_id,
        details=details,
    )
