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
    MAX_CRYPTO,
    MAX_FIAT,
    calculate_commissions,
    commission,
    completion_legs,
    crypto_to_fiat,
    fiat_to_crypto,
    parse_crypto_amount,
    parse_fiat_amount,
    payin_hold,
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
    # The selector's formula (from the trader's percent alone) holds the same amount.
    assert payin_hold(c, t) == payin_trader_hold(c, comm)
    assert payout_store_hold(c, comm.store_commission) == -payout.store


def test_payin_hold_is_the_amount_less_the_traders_commission() -> None:
    assert payin_hold(Decimal("10.00000000"), Decimal("3")) == Decimal("9.70000000")
    assert payin_hold(Decimal("1"), Decimal("0")) == Decimal("1")


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


# --------------------------------------------------------------------------- exact edges and messages
# Each assertion below pins a rule a one-character change in money.py would break (mutation testing).


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("1", Decimal("1.00000000")),
        ("0.00000001", Decimal("0.00000001")),
        ("12.5", Decimal("12.50000000")),
        (7, Decimal("7.00000000")),
        (Decimal("0.1"), Decimal("0.10000000")),
    ],
)
def test_crypto_amount_is_normalised_to_8_places(given: object, expected: Decimal) -> None:
    value = parse_crypto_amount(given)
    assert value == expected
    assert value.as_tuple().exponent == -8


def test_fiat_amount_is_normalised_to_2_places() -> None:
    value = parse_fiat_amount("10.5")
    assert value == Decimal("10.50")
    assert value.as_tuple().exponent == -2
    assert parse_fiat_amount(" 3 ") == Decimal("3.00")


def test_maxima_are_inclusive() -> None:
    assert parse_fiat_amount(MAX_FIAT) == MAX_FIAT
    assert parse_crypto_amount(MAX_CRYPTO) == MAX_CRYPTO
    with pytest.raises(ValidationFailed, match="amount_fiat is too large"):
        parse_fiat_amount(MAX_FIAT + FIAT_QUANTUM)
    with pytest.raises(ValidationFailed, match="amount_crypto is too large"):
        parse_crypto_amount(MAX_CRYPTO + CRYPTO_QUANTUM)
    assert Decimal("1e18") - FIAT_QUANTUM == MAX_FIAT
    assert Decimal("1e12") - CRYPTO_QUANTUM == MAX_CRYPTO


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (1.5, "amount_fiat must be a decimal string, not a float"),
        (True, "amount_fiat must be a decimal string, not a float"),
        ("abc", "amount_fiat is not a number"),
        ("NaN", "amount_fiat must be finite"),
        ("-Infinity", "amount_fiat must be finite"),
        ("0", "amount_fiat must be greater than zero"),
        ("-0.01", "amount_fiat must be greater than zero"),
        ("10.001", "amount_fiat has more than 2 decimal places"),
    ],
)
def test_fiat_refusals_say_what_is_wrong(bad: object, message: str) -> None:
    with pytest.raises(ValidationFailed, match=f"^{message}$"):
        parse_fiat_amount(bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("0", "amount_crypto must be greater than zero"),
        ("0.000000001", "amount_crypto has more than 8 decimal places"),
        (0.5, "amount_crypto must be a decimal string, not a float"),
    ],
)
def test_crypto_refusals_say_what_is_wrong(bad: object, message: str) -> None:
    with pytest.raises(ValidationFailed, match=f"^{message}$"):
        parse_crypto_amount(bad)


def test_the_field_name_is_the_callers() -> None:
    with pytest.raises(ValidationFailed, match=r"^limit must be greater than zero$"):
        parse_fiat_amount("0", field="limit")
    with pytest.raises(ValidationFailed, match=r"^x has more than 8 decimal places$"):
        parse_crypto_amount("1.123456789", field="x")


@pytest.mark.parametrize("rate", [Decimal("0"), Decimal("-1"), Decimal("-0.00000001")])
def test_a_rate_that_is_not_positive_is_a_validation_error(rate: Decimal) -> None:
    with pytest.raises(ValidationFailed, match=r"^exchange rate must be positive$"):
        fiat_to_crypto(Decimal("100.00"), rate)
    with pytest.raises(ValidationFailed, match=r"^exchange rate must be positive$"):
        crypto_to_fiat(Decimal("1.00000000"), rate)


def test_conversions_round_down_exactly() -> None:
    assert fiat_to_crypto(Decimal("100.00"), Decimal("3")) == Decimal("33.33333333")
    assert fiat_to_crypto(Decimal("200.00"), Decimal("3")) == Decimal("66.66666666")  # not ...67
    assert crypto_to_fiat(Decimal("1.99999999"), Decimal("1")) == Decimal("1.99")  # not 2.00
    assert crypto_to_fiat(Decimal("0.12345678"), Decimal("100")) == Decimal("12.34")
    # Precision far above the default 28 digits: a large amount at a tiny rate stays exact.
    assert fiat_to_crypto(Decimal("999999999999999999.99"), Decimal("0.00000001")) == Decimal(
        "99999999999999999999000000.00000000"
    )


@pytest.mark.parametrize("percent", [Decimal("100"), Decimal("100.0001"), Decimal("-0.0001")])
def test_commission_percent_outside_0_to_100_is_refused(percent: Decimal) -> None:
    with pytest.raises(ValidationFailed, match=r"^commission percent must be in \[0, 100\)$"):
        commission(Decimal("10"), percent)


def test_commission_edges() -> None:
    assert commission(Decimal("10"), Decimal("0")) == Decimal("0E-8")
    assert commission(Decimal("10"), Decimal("99.9999")) == Decimal("9.99999000")
    # Half up at the 9th place, and down just below it.
    assert commission(Decimal("0.00000005"), Decimal("10")) == Decimal("0.00000001")
    assert commission(Decimal("0.00000004"), Decimal("10")) == Decimal("0E-8")
    big = Decimal("999999999999.99999999")
    assert commission(big, Decimal("33.3333")) == Decimal("333333000000.00000000")


def test_payout_legs_and_holds_are_exact() -> None:
    comm = calculate_commissions(Decimal("100"), Decimal("3.5"), Decimal("2"))
    assert comm.platform_profit == Decimal("1.50000000")
    legs = completion_legs(OrderType.PAYOUT, Decimal("100"), comm)
    assert (legs.store, legs.trader, legs.platform) == (
        Decimal("-103.50000000"),
        Decimal("102.00000000"),
        Decimal("1.50000000"),
    )
    assert legs.total == 0
    assert payout_store_hold(Decimal("100"), comm.store_commission) == Decimal("103.50000000")
    assert payin_trader_hold(Decimal("100"), comm) == Decimal("98.00000000")


def test_legs_total_adds_all_three() -> None:
    from jivapay.money import Legs

    assert Legs(Decimal("1"), Decimal("2"), Decimal("4")).total == Decimal("7")


def test_to_decimal_names_the_amount_by_default() -> None:
    from jivapay.money import to_decimal

    with pytest.raises(ValidationFailed, match=r"^amount is not a number$"):
        to_decimal("x")
    assert to_decimal(Decimal("1.50")) == Decimal("1.50")
