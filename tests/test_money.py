"""Money rules, property-tested: no float anywhere, exact rounding, legs always sum to zero."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jivapay.enums import OrderType
from jivapay.money import (
    CRYPTO_QUANTUM,
    FIAT_QUANTUM,
    calculate_commissions,
    commission,
    completion_legs,
    crypto_to_fiat,
    fiat_to_crypto,
    parse_crypto_amount,
    parse_fiat_amount,
    payin_trader_hold,
    payout_store_hold,
)
from jivapay.utils.exceptions import ValidationFailed

fiat = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000000"), places=2)
rates = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000000"), places=8)
percents = st.decimals(min_value=Decimal("0"), max_value=Decimal("99.9999"), places=4)
crypto = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("100000000"), places=8)


@given(fiat, rates)
def test_fiat_to_crypto_rounds_down_to_8_places(f: Decimal, r: Decimal) -> None:
    c = fiat_to_crypto(f, r)
    assert c == c.quantize(CRYPTO_QUANTUM)
    assert c * r <= f  # never more crypto than the fiat is worth
    assert (c + CRYPTO_QUANTUM) * r > f  # and the largest such amount


@given(crypto, rates)
def test_crypto_to_fiat_rounds_down_to_2_places(c: Decimal, r: Decimal) -> None:
    f = crypto_to_fiat(c, r)
    assert f == f.quantize(FIAT_QUANTUM)
    assert f <= c * r < f + FIAT_QUANTUM


@given(crypto, percents, percents, st.sampled_from(list(OrderType)))
def test_three_legs_sum_to_exactly_zero(
    c: Decimal, s: Decimal, t: Decimal, kind: OrderType
) -> None:
    comm = calculate_commissions(c, s, t)
    legs = completion_legs(kind, c, comm)
    assert legs.total == 0
    assert legs.platform == comm.platform_profit == comm.store_commission - comm.trader_commission
    for leg in (legs.store, legs.trader, legs.platform):
        assert isinstance(leg, Decimal)
        assert leg == leg.quantize(CRYPTO_QUANTUM)


@given(crypto, percents)
def test_commission_is_half_up_within_half_a_unit(c: Decimal, p: Decimal) -> None:
    value = commission(c, p)
    exact = c * p / 100
    assert abs(value - exact) <= CRYPTO_QUANTUM / 2
    assert 0 <= value <= c


@given(crypto, percents, percents)
def test_holds_cover_the_completion_moves(c: Decimal, s: Decimal, t: Decimal) -> None:
    comm = calculate_commissions(c, s, t)
    payin = completion_legs(OrderType.PAYIN, c, comm)
    payout = completion_legs(OrderType.PAYOUT, c, comm)
    assert payin_trader_hold(c, comm) == -payin.trader
    assert payout_store_hold(c, comm.store_commission) == -payout.store


def test_commission_examples() -> None:
    comm = calculate_commissions(Decimal("100.00000000"), Decimal("3.5"), Decimal("2"))
    assert comm.store_commission == Decimal("3.50000000")
    assert comm.trader_commission == Decimal("2.00000000")
    legs = completion_legs(OrderType.PAYIN, Decimal("100"), comm)
    assert (legs.store, legs.trader, legs.platform) == (
        Decimal("96.50000000"),
        Decimal("-98.00000000"),
        Decimal("1.50000000"),
    )
    assert commission(Decimal("0.00000001"), Decimal("50")) == Decimal("0.00000001")  # half up
    assert fiat_to_crypto(Decimal("1000.00"), Decimal("92.5")) == Decimal("10.81081081")


@pytest.mark.parametrize("ok", ["10", "10.5", "10.50", "10.500", 10, Decimal("0.01")])
def test_fiat_amount_accepts_two_places(ok: object) -> None:
    value = parse_fiat_amount(ok)
    assert value == value.quantize(FIAT_QUANTUM)


@pytest.mark.parametrize("bad", ["10.001", "0", "-5", "abc", "NaN", "Infinity", 10.5, True, "1e30"])
def test_fiat_amount_refuses_bad_input(bad: object) -> None:
    with pytest.raises(ValidationFailed):
        parse_fiat_amount(bad)


@pytest.mark.parametrize("bad", ["0.000000001", "0", "-1", 1.5])
def test_crypto_amount_refuses_bad_input(bad: object) -> None:
    with pytest.raises(ValidationFailed):
        parse_crypto_amount(bad)
