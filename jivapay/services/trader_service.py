"""Trader self-service: the in-work switch (the trader's own; the teamlead has a separate one)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from jivapay.database.models import Trader
from jivapay.security import Principal
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import NotFound


def set_in_work(session: Session, *, principal: Principal, in_work: bool) -> bool:
    """Switch the calling trader's own traffic on or off; returns the new state."""
    trader = session.get(Trader, principal.profile_id, with_for_update=True)
    if trader is None:
        raise NotFound("trader profile not found")
    if trader.in_work != in_work:
        trader.in_work = in_work
        log_event(
            session,
            action="trader.in_work_changed",
            user_id=principal.user_id,
            target_entity="trader",
            target_id=trader.id,
            details={"in_work": in_work},
        )
        session.flush()
    return trader.in_work
