"""What "online" means for a requisite, in one place.

A requisite is online for a direction when its trader's user is active, the trader is in work (their
own switch) AND enabled by the teamlead (the teamlead's switch: neither overrides the other), the
trader and the requisite's settings both allow the direction, and the requisite is approved and not
excluded from distribution.

The same conditions feed two readers:
  - the requisite selector (the hot path), which keeps its hand-written SQL and takes the compiled
    text of these conditions over the aliases it uses (`r`, `s`, `t`, `u`) via `online_sql`;
  - the online statistics (`requisite_online_stats`, `team_statistics`), which take them as
    SQLAlchemy conditions via `online_conditions`.
A test proves the two agree (tests/services/test_online_filter.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, not_, or_
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from jivapay.database.models import FullRequisitesSettings, ReqTrader, Trader, User
from jivapay.enums import OrderType, RequisiteStatus


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
    ]


def online_sql(direction: OrderType) -> str:
    """The online conditions as SQL text over `req_traders r`, `full_requisites_settings s`,
    `traders t`, `users u` (for the selector's statement; constants only, no bind parameters)."""
    r = aliased(ReqTrader, name="r")
    s = aliased(FullRequisitesSettings, name="s")
    t = aliased(Trader, name="t")
    u = aliased(User, name="u")
    clause = and_(*online_conditions(direction, requisite=r, settings=s, trader=t, user=u))
    return str(clause.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
