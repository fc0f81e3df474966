"""The selector's SQL computes the PayIn hold exactly as `money.payin_hold` does."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session

from jivapay.money import payin_hold
from jivapay.services.requisite_selector import PAYIN_HOLD_SQL, payin_hold_for

_HOLD_IN_SQL = text(
    "SELECT "
    + PAYIN_HOLD_SQL.replace(":amount_crypto", "CAST(:amount_crypto AS NUMERIC(20, 8))").replace(
        "tc.commission_payin", "CAST(:percent AS NUMERIC(7, 4))"
    )
)

amounts = st.decimals(
    min_value=Decimal("0.00000001"), max_value=Decimal("999999999.99999999"), places=8
)
percents = st.decimals(min_value=Decimal(0), max_value=Decimal("99.9999"), places=4)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amount=amounts, percent=percents)
@example(amount=Decimal("0.00000005"), percent=Decimal("10"))  # C*t/100 ends in an exact half
@example(amount=Decimal("0.00000015"), percent=Decimal("10"))
@example(amount=Decimal("999999999.99999999"), percent=Decimal("99.9999"))
def test_the_selector_sql_and_money_agree_on_the_payin_hold(
    db: Session, amount: Decimal, percent: Decimal
) -> None:
    in_sql = db.scalar(_HOLD_IN_SQL, {"amount_crypto": amount, "percent": percent})
    assert in_sql == payin_hold(amount, percent) == payin_hold_for(amount, percent)
