"""Staff controls of traders: the overview, one trader's full picture, settings (directions,
priority kept in sync with the requisites' distribution weight, base limits, team, time zone), the
traffic switch and the commission (a new row each time: the newest applies to orders assigned
from then on, orders already assigned keep the rate fixed on them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jivapay.database.models import (
    CryptoCurrency,
    FiatCurrency,
    OrderHistory,
    ReqTrader,
    TeamLead,
    Trader,
    TraderCommission,
    User,
)
from jivapay.enums import OrderStatus, OrderType
from jivapay.permissions import Permission, check_permission
from jivapay.schemas.traders import (
    CommissionChanged,
    OrderBrief,
    TraderDetailRead,
    TradersStatsRead,
    TraderUpdate,
)
from jivapay.security import Principal
from jivapay.services import requisite_service, trader_account, trader_service, trader_statistics
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import NotFound, ValidationFailed
from jivapay.utils.query_filters import traders_visible_to

RECENT_ORDERS = 10
MAX_REQUISITES_SHOWN = 200


@dataclass(frozen=True)
class StaffActor:
    user_id: int
    ip_address: str | None = None


def _visible_trader(session: Session, principal: Principal, trader_id: int) -> Trader:
    trader = session.scalars(
        select(Trader).where(Trader.id == trader_id, traders_visible_to(principal))
    ).first()
    if trader is None:
        raise NotFound("trader not found")
    return trader


def _locked_trader(session: Session, trader_id: int) -> Trader:
    trader = session.get(Trader, trader_id, with_for_update=True)
    if trader is None:
        raise NotFound("trader not found")
    return trader


def overview(session: Session, *, date_from: datetime, date_to: datetime) -> TradersStatsRead:
    """Counts of traders and requisites, and every trader's orders in the period."""
    counts = session.execute(
        select(
            func.count(),
            func.count().filter(User.is_active.is_(True)),
            func.count().filter(Trader.in_work.is_(True)),
            func.count().filter(Trader.is_traffic_enabled_by_teamlead.is_(True)),
        )
        .select_from(Trader)
        .join(User, User.id == Trader.user_id)
    ).one()
    by_status = dict(
        session.execute(select(ReqTrader.status, func.count()).group_by(ReqTrader.status)).all()
    )
    return TradersStatsRead(
        traders=counts[0],
        active=counts[1],
        in_work=counts[2],
        traffic_enabled=counts[3],
        requisites_by_status={str(k): int(v) for k, v in by_status.items()},
        orders=trader_statistics.order_statistics(session, date_from=date_from, date_to=date_to),
    )


def recent_orders(
    session: Session, *, trader_id: int, limit: int = RECENT_ORDERS
) -> list[OrderBrief]:
    """The trader's newest orders, briefly."""
    rows = session.execute(
        select(OrderHistory, FiatCurrency.code, CryptoCurrency.code)
        .join(FiatCurrency, FiatCurrency.id == OrderHistory.fiat_currency_id)
        .join(CryptoCurrency, CryptoCurrency.id == OrderHistory.crypto_currency_id)
        .where(OrderHistory.trader_id == trader_id)
        .order_by(OrderHistory.created_at.desc(), OrderHistory.id.desc())
        .limit(limit)
    ).all()
    return [
        OrderBrief(
            order_id=o.public_id,
            order_type=OrderType(o.order_type),
            status=OrderStatus(o.status),
            amount_fiat=o.amount_fiat,
            fiat_currency=fiat,
            amount_crypto=o.amount_crypto,
            crypto_currency=crypto,
            requisite_id=o.requisite_id,
            created_at=o.created_at,
        )
        for o, fiat, crypto in rows
    ]


def detail(session: Session, *, principal: Principal, trader_id: int) -> TraderDetailRead:
    """One trader: profile, team, commission history, requisites (masked), and the balances and
    recent orders when the caller's grants show them elsewhere too."""
    trader = _visible_trader(session, principal, trader_id)
    requisites, _ = requisite_service.list_requisites(
        session,
        principal=principal,
        filters=requisite_service.RequisiteFilters(trader_id=trader.id),
        limit=MAX_REQUISITES_SHOWN,
        offset=0,
    )
    return TraderDetailRead(
        profile=trader_account.profile(session, trader_id=trader.id),
        commission_history=trader_account.commission_history(session, trader_id=trader.id),
        requisites=requisites,
        balances=trader_account.balances(session, trader_id=trader.id)
        if check_permission(principal, Permission.BALANCES_VIEW_ALL)
        else None,
        recent_orders=recent_orders(session, trader_id=trader.id)
        if check_permission(principal, Permission.ORDERS_VIEW_ALL)
        else None,
    )


def update_trader(
    session: Session, *, trader_id: int, changes: TraderUpdate, actor: StaffActor
) -> bool:
    """Apply the fields sent (priority also onto the requisites); True if anything changed."""
    trader = _locked_trader(session, trader_id)
    sent = changes.model_dump(include=changes.model_fields_set)
    reason = sent.pop("reason", None)
    for name in ("pay_in", "pay_out", "trafic_priority"):
        if name in sent and sent[name] is None:
            raise ValidationFailed(f"{name} cannot be null")
    if "time_zone" in sent:
        sent["time_zone_id"] = trader_account.time_zone_id(session, sent.pop("time_zone"))
    if sent.get("team_lead_id") is not None and session.get(TeamLead, sent["team_lead_id"]) is None:
        raise ValidationFailed("no such teamlead", code="unknown_teamlead")
    lower = sent.get("base_lower_limit", trader.base_lower_limit)
    upper = sent.get("base_upper_limit", trader.base_upper_limit)
    if lower is not None and upper is not None and lower > upper:
        raise ValidationFailed(
            "base_lower_limit must not exceed base_upper_limit", code="limits_unordered"
        )
    diff = {
        k: {"from": getattr(trader, k), "to": v} for k, v in sent.items() if getattr(trader, k) != v
    }
    if not diff:
        return False
    priority = diff.pop("trafic_priority", None)
    for name, change in diff.items():
        setattr(trader, name, change["to"])
    if priority is not None:
        # Keeps `req_traders.distribution_weight` equal to the priority (audited there too).
        trader_service.set_traffic_priority(
            session,
            trader_id=trader.id,
            priority=priority["to"],
            actor_user_id=actor.user_id,
            ip_address=actor.ip_address,
        )
        diff["trafic_priority"] = priority
    log_event(
        session,
        action="trader.settings_changed",
        user_id=actor.user_id,
        target_entity="trader",
        target_id=trader.id,
        details={"changes": diff, "reason": reason},
        ip_address=actor.ip_address,
    )
    session.flush()
    return True


def set_traffic(
    session: Session, *, trader_id: int, enabled: bool, reason: str | None, actor: StaffActor
) -> bool:
    """Allow or stop assignment to the trader at once (their own work switch cannot override)."""
    trader = _locked_trader(session, trader_id)
    if trader.is_traffic_enabled_by_teamlead == enabled:
        return False
    trader.is_traffic_enabled_by_teamlead = enabled
    log_event(
        session,
        action="trader.traffic_changed",
        user_id=actor.user_id,
        target_entity="trader",
        target_id=trader.id,
        details={"from": not enabled, "to": enabled, "reason": reason},
        ip_address=actor.ip_address,
    )
    session.flush()
    return True


def set_commission(
    session: Session,
    *,
    trader_id: int,
    commission_payin: Decimal,
    commission_payout: Decimal,
    reason: str,
    actor: StaffActor,
) -> CommissionChanged:
    """Add a commission row that applies to orders assigned from now on (a repeat adds none)."""
    trader = _locked_trader(session, trader_id)
    history = trader_account.commission_history(session, trader_id=trader.id)
    current = history[0] if history else None
    if (
        current is not None
        and current.commission_payin == commission_payin
        and current.commission_payout == commission_payout
    ):
        return CommissionChanged(**current.model_dump(), trader_id=trader.id, changed=False)
    row = TraderCommission(
        trader_id=trader.id,
        commission_payin=commission_payin,
        commission_payout=commission_payout,
    )
    session.add(row)
    session.flush()
    log_event(
        session,
        action="trader.commission_set",
        user_id=actor.user_id,
        target_entity="trader",
        target_id=trader.id,
        details={
            "from": None
            if current is None
            else {"payin": current.commission_payin, "payout": current.commission_payout},
            "to": {"payin": commission_payin, "payout": commission_payout},
            "reason": reason,
        },
        ip_address=actor.ip_address,
    )
    session.refresh(row)
    return CommissionChanged(
        commission_payin=row.commission_payin,
        commission_payout=row.commission_payout,
        created_at=row.created_at,
        trader_id=trader.id,
        changed=True,
    )
