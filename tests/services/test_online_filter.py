"""The requisite selector and the online statistics agree on which requisites are online: the same
requisites, for each direction, over many combinations of the switches and statuses."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

import pytest
from sqlalchemy import update

from jivapay.database.base import utcnow
from jivapay.database.models import ReqTrader, User
from jivapay.enums import OnlineStatsSort, OrderType, RequisiteStatus, Role
from jivapay.security import Principal
from jivapay.services import online_stats
from jivapay.services.online_filter import online_sql
from jivapay.services.requisite_selector import _STATEMENTS, find_suitable_requisite
from jivapay.utils.exceptions import RequisiteNotFound
from tests.factories import (
    make_incoming,
    make_reference,
    make_requisite,
    make_staff,
    make_store,
    make_trader,
)

D = Decimal

_FLAGS = ("active", "in_work", "traffic", "t_in", "t_out", "s_in", "s_out", "excluded")
_STATUSES = tuple(RequisiteStatus)


def _selector_picks(db, incoming) -> set[int]:  # type: ignore[no-untyped-def]
    """Every requisite the real selector hands out, by rotating through them with `last_used_at`."""
    picked: set[int] = set()
    while True:
        try:
            selected = find_suitable_requisite(db, order=incoming, now=utcnow())
        except RequisiteNotFound:
            return picked
        if selected.requisite_id in picked:
            return picked
        picked.add(selected.requisite_id)
        db.execute(
            update(ReqTrader)
            .where(ReqTrader.id == selected.requisite_id)
            .values(last_used_at=utcnow())
        )


def test_selector_and_online_stats_agree(db) -> None:  # type: ignore[no-untyped-def]
    ref = make_reference(db, rate=D("100"))
    store = make_store(db, ref, balance=D("10000"))
    rng = random.Random(20261204)
    combos = list(itertools.product((True, False), repeat=len(_FLAGS)))
    chosen = [*rng.sample(combos, 48), (True,) * 7 + (False,)]
    expected: dict[OrderType, set[int]] = {OrderType.PAYIN: set(), OrderType.PAYOUT: set()}
    for i, values in enumerate(chosen):
        flags = dict(zip(_FLAGS, values, strict=True))
        status = RequisiteStatus.APPROVED if i % 3 else rng.choice(_STATUSES)
        trader = make_trader(
            db,
            ref,
            in_work=flags["in_work"],
            is_traffic_enabled_by_teamlead=flags["traffic"],
            pay_in=flags["t_in"],
            pay_out=flags["t_out"],
        )
        if not flags["active"]:
            db.get(User, trader.user_id).is_active = False
        req = make_requisite(
            db, trader, ref, pay_in=flags["s_in"], pay_out=flags["s_out"], status=status
        )
        req.is_excluded_from_distribution = flags["excluded"]
        db.flush()
        base = (
            flags["active"]
            and flags["in_work"]
            and flags["traffic"]
            and status == RequisiteStatus.APPROVED
            and not flags["excluded"]
        )
        if base and flags["t_in"] and flags["s_in"]:
            expected[OrderType.PAYIN].add(req.id)
        if base and flags["t_out"] and flags["s_out"]:
            expected[OrderType.PAYOUT].add(req.id)
    assert expected[OrderType.PAYIN] and expected[OrderType.PAYOUT]

    admin = make_staff(db, Role.ADMIN)
    principal = Principal(admin.user_id, Role.ADMIN, "a@x", admin.id, permissions=("superuser",))
    for direction in OrderType:
        stats = online_stats.online_requisites(
            db,
            principal=principal,
            filters=online_stats.OnlineFilters(fiat_currency=ref.fiat.code, direction=direction),
            sort=OnlineStatsSort.PRIORITY,
            limit=200,
            offset=0,
            now=utcnow(),
        )
        from_stats = {item.requisite_id for item in stats.items}
        incoming = make_incoming(db, store, ref, amount_fiat=D("100.00"), order_type=direction)
        from_selector = _selector_picks(db, incoming)
        assert from_stats == from_selector == expected[direction], direction
        assert stats.total == len(from_stats)


@pytest.mark.parametrize("direction", list(OrderType))
def test_selector_statement_embeds_the_shared_filter(direction: OrderType) -> None:
    assert online_sql(direction) in _STATEMENTS[direction].text
    column = "pay_in" if direction == OrderType.PAYIN else "pay_out"
    assert f"t.{column} AND s.{column}" in online_sql(direction)
    assert "t.is_traffic_enabled_by_teamlead" in online_sql(direction)
