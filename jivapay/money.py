"""Decimal money rules of docs/money.md, as pure functions.

Fiat has 2 places and must arrive that way (more is an error, never a silent rounding); crypto
amounts derived from fiat are rounded DOWN to 8 places; commissions are rounded HALF_UP to 8
places; the platform's profit is the remainder, so the three legs of an order always sum to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from jivapay.enums import OrderType
from jivapay.utils.exceptions import ValidationFailed

FIAT_PLACES = 2
CRYPTO_PLACES = 8
FIAT_QUANTUM = Decimal("0.01")
CRYPTO_QUANTUM = Decimal("0.00000001")
HUNDRED = Decimal(100)
# NUMERIC(20, 2) / NUMERIC(20, 8) bounds: the integer part may have 18 / 12 digits.
MAX_FIAT = Decimal("1e18") - FIAT_QUANTUM
MAX_CRYPTO = Decimal("1e12") - CRYPTO_QUANTUM
_PRECISION = 60  # far above any product of two NUMERIC(20, 8) values


def to_decimal(value: Any, *, field: str = "amount") -> Decimal:
    """Read a client value (string, int or Decimal; never a float) as a finite Decimal."""
    if isinstance(value, bool | float):
        raise ValidationFailed(f"{field} must be a decimal string, not a float")
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise ValidationFailed(f"{field} is not a number") from exc
    if not result.is_finite():
        raise ValidationFailed(f"{field} must be finite")
    return result


def _check_places(value: Decimal, quantum: Decimal, places: int, field: str) -> Decimal:
    if value != value.quantize(quantum, rounding=ROUND_DOWN):
        raise ValidationFailed(f"{field} has more than {places} decimal places")
    return value.quantize(quantum)


def parse_fiat_amount(value: Any, *, field: str = "amount_fiat") -> Decimal:
    """A positive fiat amount with at most 2 decimals, normalised to exactly 2 places."""
    amount = to_decimal(value, field=field)
    if amount <= 0:
        raise ValidationFailed(f"{field} must be greater than zero")
    if amount > MAX_FIAT:
        raise ValidationFailed(f"{field} is too large")
    return _check_places(amount, FIAT_QUANTUM, FIAT_PLACES, field)


def parse_crypto_amount(value: Any, *, field: str = "amount_crypto") -> Decimal:
    """A positive crypto amount with at most 8 decimals, normalised to exactly 8 places."""
    amount = to_decimal(value, field=field)
    if amount <= 0:
        raise ValidationFailed(f"{field} must be greater than zero")
    if amount > MAX_CRYPTO:
        raise ValidationFailed(f"{field} is too large")
    return _check_places(amount, CRYPTO_QUANTUM, CRYPTO_PLACES, field)


def fiat_to_crypto(amount_fiat: Decimal, rate: Decimal) -> Decimal:
    """C = F / R, rounded down to 8 places (the platform never promises more than it has)."""
    if rate <= 0:
        raise ValidationFailed("exchange rate must be positive")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (amount_fiat / rate).quantize(CRYPTO_QUANTUM, rounding=ROUND_DOWN)


def crypto_to_fiat(amount_crypto: Decimal, rate: Decimal) -> Decimal:
    """F = C * R, rounded down to 2 places (a PayOut given in crypto)."""
    if rate <= 0:
        raise ValidationFailed("exchange rate must be positive")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (amount_crypto * rate).quantize(FIAT_QUANTUM, rounding=ROUND_DOWN)


def commission(amount_crypto: Decimal, percent: Decimal) -> Decimal:
    """C * percent / 100, rounded half-up to 8 places."""
    if percent < 0 or percent >= HUNDRED:
        raise ValidationFailed("commission percent must be in [0, 100)")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (amount_crypto * percent / HUNDRED).quantize(CRYPTO_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Commissions:
    store_commission: Decimal
    trader_commission: Decimal

    @property
    def platform_profit(self) -> Decimal:
        return self.store_commission - self.trader_commission


def calculate_commissions(
    amount_crypto: Decimal, store_percent: Decimal, trader_percent: Decimal
) -> Commissions:
    """The store and trader commissions of an order; the platform keeps the difference."""
    return Commissions(
        commission(amount_crypto, store_percent), commission(amount_crypto, trader_percent)
    )


@dataclass(frozen=True)
class Legs:
    """The signed crypto movements of a completed order; they sum to exactly zero."""

    store: Decimal
    trader: Decimal
    platform: Decimal

    @property
    def total(self) -> Decimal:
        return self.store + self.trader + self.platform


def completion_legs(order_type: OrderType, amount_crypto: Decimal, c: Commissions) -> Legs:
    """Store, trader-deposit and platform legs of a completed order (docs/money.md)."""
    s, t = c.store_commission, c.trader_commission
    if order_type == OrderType.PAYIN:
        return Legs(store=amount_crypto - s, trader=-(amount_crypto - t), platform=s - t)
    return Legs(store=-(amount_crypto + s), trader=amount_crypto + t, platform=s - t)


def payin_hold(amount_crypto: Decimal, trader_percent: Decimal) -> Decimal:
    """What a PayIn freezes on the trader's deposit at assignment: C - C*t (C*t rounded half-up).

    The one formula of the PayIn hold. The selector's SQL filter computes the same amount in
    PostgreSQL (`requisite_selector.PAYIN_HOLD_SQL`); a property test keeps the two equal.
    """
    return amount_crypto - commission(amount_crypto, trader_percent)


def payin_trader_hold(amount_crypto: Decimal, c: Commissions) -> Decimal:
    """`payin_hold` from commissions already computed for the order (C - C*t)."""
    return amount_crypto - c.trader_commission


def payout_store_hold(amount_crypto: Decimal, store_commission: Decimal) -> Decimal:
    """What a PayOut freezes on the store's balance at intake: C + C*s."""
    return amount_crypto + store_commission
