"""Trader settings: the trader's own in-work switch, and the traffic priority that staff set (kept
in sync with each requisite's `distribution_weight`, which the selector orders by)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from jivapay.database.models import ReqTrader, Trader
from jivapay.security import Principal
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import NotFound, ValidationFailed


def set_in_work(
    session: Session, *, principal: Principal, in_work: bool, ip_address: str | None = None
) -> bool:
    """Switch the calling trader's own traffic on or off (audited); whether it changed."""
    trader = session.get(Trader, principal.profile_id, with_for_update=True)
    if trader is None:
        raise NotFound("trader profile not found")
    if trader.in_work == in_work:
        return False
    trader.in_work = in_work
    log_event(
        session,
        action="trader.in_work_changed",
        user_id=principal.user_id,
        target_entity="trader",
        target_id=trader.id,
        details={"old": {"in_work": not in_work}, "new": {"in_work": in_work}},
        ip_address=ip_address,
    )
    session.flush()
    return True


def set_traffic_priority(
    session: Session,
    *,
    trader_id: int,
    priority: int,
    actor_user_id: int | None,
    ip_address: str | None = None,
) -> None:
    """Set a trader's priority (lower is preferred) and copy it onto every requisite of theirs."""
    if priority < 0:
        raise ValidationFailed("priority must not be negative")
    trader = session.get(Trader, trader_id, with_for_update=True)
    if trader is None:
        raise NotFound("trader not found")
    previous = trader.trafic_priority
    trader.trafic_priority = priority
    session.execute(
        update(ReqTrader)
        .where(ReqTrader.trader_id == trader_id)
        .values(distribution_weight=priority)
    )
    log_event(
        session,
        action="trader.priority_changed",
        user_id=actor_user_id,
        target_entity="trader",
        target_id=trader_id,
        details={"from": previous, "to": priority},
        ip_address=ip_address,
    )
    session.flush()
