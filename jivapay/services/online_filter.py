"""What "online" means for a requisite, in one place.

A requisite is online for a direction when its trader's user is active, the trader is in work (their
own switch) AND enabled by the teamlead (the teamlead's switch: neither overrides the other), the
trader and the requisite's settings both allow the direction, the requisite is approved and not
excluded from distribution, and its bank and payment method are active and their offer in its fiat
(`avalible_bank_methods`) is not deactivated: an admin deactivating a bank, a method or an offer
stops new orders going to those requisites at once (a requisite whose combination has no offer row
at all is not held back: registration requires one, older rows may lack it).

The same conditions feed two readers:
  - the requisite selector (the hot path), which keeps its hand-written SQL and takes the compiled
    text of these conditions over the aliases it uses (`r`, `s`, `t`, `u`) via `online_sql`;
  - the online statistics (`requisite_online_stats`, `team_statistics`), which take them as
    SQLAlchemy conditions via `online_conditions`.
A test proves the two agree (tests/services/test_online_filter.py). The reference flags are
correlated scalar subqueries by primary key or unique key, not joins: each reader keeps its FROM,
and the selector still walks its rotation index, paying three index probes per candidate it looks
at, in the same statement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal_column, not_, or_, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from jivapay.database.models import (
    AvailableBankMethod,
    Bank,
    FullRequisitesSettings,
    PaymentMethod,
    ReqTrader,
    Trader,
    User,
)
from jivapay.enums import OrderType, RequisiteStatus


def _reference_active(requisite: Any) -> list[ColumnElement[bool]]:
    """The requisite's bank and method are active, and their offer in its fiat is not switched off."""
    bank = aliased(Bank, name="rb")
    method = aliased(PaymentMethod, name="rm")
    offer = aliased(AvailableBankMethod, name="ro")
    bank_active = (
        select(bank.is_active).where(bank.id == requisite.bank_id).correlate(requisite)
    ).scalar_subquery()
    method_active = (
        select(method.is_active)
        .where(method.id == requisite.payment_method_id)
        .correlate(requisite)
    ).scalar_subquery()
    offer_active = (
        select(offer.is_active)
        .where(
            offer.fiat_currency_id == requisite.fiat_currency_id,
            offer.bank_id == requisite.bank_id,
            offer.payment_method_id == requisite.payment_method_id,
        )
        .correlate(requisite)
    ).scalar_subquery()
    return [
        bank_active.is_(True),
        method_active.is_(True),
        func.coalesce(offer_active, true()).is_(True),
    ]


def online_conditions(
    direction: OrderType | None,
    *,
    requisite: Any = ReqTrader,
    settings: Any = FullRequisitesSettings,
    trader: Any = Trader,
    user: Any = User,
) -> list[ColumnElement[bool]]:
    """WHERE conditions (over the given entities or aliases) of a requisite online for `direction`.

    With no direction, online for at least one of the two.
    """
    if direction is None:
        direction_on = or_(
            and_(trader.pay_in, settings.pay_in), and_(trader.pay_out, settings.pay_out)
        )
        directions: list[ColumnElement[bool]] = [direction_on]
    elif direction == OrderType.PAYIN:
        directions = [trader.pay_in, settings.pay_in]
    else:
        directions = [trader.pay_out, settings.pay_out]
    return [
        requisite.status == RequisiteStatus.APPROVED.value,
        not_(requisite.is_excluded_from_distribution),
        user.is_active,
        trader.in_work,
        trader.is_traffic_enabled_by_teamlead,
        *directions,
        *_reference_active(requisite),
    ]


def online_sql(direction: OrderType) -> str:
    """The online conditions as SQL text over `req_traders r`, `full_requisites_settings s`,
    `traders t`, `users u` (for the selector's statement; constants only, no bind parameters)."""
    r = aliased(ReqTrader, name="r")
    s = aliased(FullRequisitesSettings, name="s")
    t = aliased(Trader, name="t")
    u = aliased(User, name="u")
    clause = and_(*online_conditions(direction, requisite=r, settings=s, trader=t, user=u))
    # Compiled inside a SELECT over the four aliases, so that the correlated subqueries name `r`
    # instead of adding it to their own FROM; the WHERE is what the selector embeds.
    compiled = str(
        select(literal_column("1"))
        .where(clause)
        .compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )
    return compiled.split("\nWHERE ", 1)[1]
