"""Fraud checks: before assignment (`check_incoming_order`) and when the payer
confirms a PayIn (`check_order_confirmation`). Outcomes ALLOW, DENY, REVIEW.

Rules before assignment, each switchable, thresholds from the settings (`FRAUD_*`); every rule is
evaluated, the most severe outcome wins and names its first rule, and the audit row lists all:

| rule                    | fires when                                                  | outcome |
|-------------------------|-------------------------------------------------------------|---------|
| blocklist_customer_id   | customer id (or `store:customer`) on the block list         | DENY    |
| blocklist_ip            | customer IP in a blocked address or network                 | DENY    |
| blocklist_card_last4    | PayOut card's last four digits blocked                      | DENY    |
| blocklist_card_hash     | PayOut card's keyed hash blocked                            | DENY    |
| amount_deny             | amount_fiat > FRAUD_DENY_THRESHOLD (unset: off)             | DENY    |
| velocity_customer       | orders of this store's customer in the window > max         | DENY    |
| velocity_ip             | orders from this IP in the window > max                     | DENY    |
| velocity_store          | orders of this store in the window > max                    | DENY    |
| amount_review           | amount_fiat > FRAUD_MANUAL_REVIEW_THRESHOLD (unset: off)    | REVIEW  |
| unpaid_expired          | >= FRAUD_UNPAID_EXPIRED_MAX expired PayIns of this customer | REVIEW  |
|                         | in FRAUD_UNPAID_EXPIRED_WINDOW_HOURS (card harvesting)      |         |

Velocity is a DENY: a burst is refused, the store may send the order again later. Card harvesting
is a REVIEW: a real customer whose payments keep failing looks the same, so a human decides. An
allow-listed customer id or IP is exempt from velocity (its own dimension) and harvesting, never
from block lists or amounts. A REVIEW that a human released (`manual_review.release_for_processing`,
audit row `fraud.review_released`) is not raised again for that order; DENY rules still apply.

Velocity counting: fixed windows of FRAUD_VELOCITY_WINDOW_SECONDS, chosen by the order's intake
time (`created_at`), so every attempt of one order lands in the same window. One Lua script per
check increments the order's counters (INCR + EXPIRE) and stores the resulting counts under a
per-order marker (`seen:<public_id>`) in the same atomic step; a retry finds the marker and gets the
same counts back, so an order is counted once and decided the same way however often it is
retried. When Redis fails the counts come from the database instead (logged, never raised): the
orders of that dimension created in the same window up to this one. That is the same number Redis
gives when orders are processed in intake order. The indexes `ix_incoming_orders_customer_created`
and `ix_incoming_orders_ip_created` (and the store's `ix_incoming_orders_store_created`) serve those
counts. The rules' reads from the database (the list entries and the harvesting count, which
`ix_order_history_customer_created` serves) are one statement, `_LOOKUP`, since the check runs
inside every assignment.

At confirmation only the block lists are checked again (entries added since intake). A non-ALLOW
decision there does not mark the order paid: `screen_payer_confirmation` returns it and the caller
(`gateway_service.payer_confirm`) opens a dispute instead,
so support looks at the money before anyone completes it.

Recording: `record_decision` writes the audit row (`fraud.deny` / `fraud.review`, rule, outcome,
details) in the caller's transaction and, for REVIEW, sends an alert after commit. The order
processor calls it in its failure transaction (its main transaction rolls back on DENY/REVIEW).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import exists, func, select, text
from sqlalchemy.orm import Session

from jivapay.database.base import utcnow
from jivapay.database.models import AuditLog, IncomingOrder, OrderHistory
from jivapay.database.types import fingerprint
from jivapay.database.utils import call_after_commit
from jivapay.enums import (
    AuditLevel,
    FraudListKind,
    FraudListType,
    FraudOutcome,
    FraudRule,
    OrderStatus,
    OrderType,
)
from jivapay.services.audit_logger import log_event
from jivapay.utils.config_loader import runtime_settings
from jivapay.utils.metrics import FRAUD_DECISIONS_TOTAL
from jivapay.utils.notifications import notify_alert
from jivapay.utils.redis_client import REDIS_ERRORS, get_redis, namespace

log = structlog.get_logger(__name__)

# Tests point the counters at a dead Redis or a private key space; None means the defaults.
REDIS_URL_OVERRIDE: str | None = None
KEY_PREFIX_OVERRIDE: str | None = None
RELEASED_ACTION = "fraud.review_released"


@dataclass(frozen=True)
class FraudDecision:
    outcome: FraudOutcome
    rule: str | None = None
    details: dict[str, object] = field(default_factory=dict)


ALLOW = FraudDecision(FraudOutcome.ALLOW)
_SEVERITY = {FraudOutcome.ALLOW: 0, FraudOutcome.REVIEW: 1, FraudOutcome.DENY: 2}


@dataclass(frozen=True)
class _Fired:
    rule: FraudRule
    outcome: FraudOutcome
    detail: dict[str, Any]


def _setting(session: Session, key: str) -> Any:
    return getattr(runtime_settings(session), key)


def _on(session: Session, key: str) -> bool:
    return bool(_setting(session, key))


def _decide(fired: list[_Fired], extra: dict[str, Any]) -> FraudDecision:
    if not fired:
        return FraudDecision(FraudOutcome.ALLOW, details=extra) if extra else ALLOW
    worst = max(fired, key=lambda f: _SEVERITY[f.outcome])
    first = next(f for f in fired if f.outcome == worst.outcome)
    details = {
        **extra,
        "fired": [{"rule": f.rule.value, "outcome": f.outcome.value, **f.detail} for f in fired],
    }
    return FraudDecision(first.outcome, first.rule.value, details)


# --------------------------------------------------------------------------- lists


@dataclass(frozen=True)
class _ListHits:
    blocked: list[tuple[FraudRule, dict[str, Any]]]
    allowed_customer: bool
    allowed_ip: bool
    # The customer's expired PayIns since the time asked for (`_list_hits`'s `unpaid_since`).
    unpaid_expired: int = 0


# Everything the rules read from the database, in one statement built once (the check runs inside
# every assignment): the list entries an order's customer id, address or card could match (networks
# are matched in Python, `_ip_matches`; each branch is an index scan in the generic plan the
# assignment's transaction uses, the networks by `ix_fraud_lists_ip_networks`), then one row with
# the customer's unpaid expired PayIns since `:since` (0 when `:since` is NULL: the harvesting rule
# does not apply).
_LOOKUP = text(
    """
SELECT f.id, f.kind, f.value, f.list_type, NULL::bigint AS unpaid
FROM fraud_lists f
WHERE (f.kind = 'customer_id'
       AND f.value = ANY(CAST(:customer_values AS varchar[])))
   OR (f.kind = 'ip' AND f.value = CAST(:ip AS varchar))
   OR (f.kind = 'ip' AND f.value LIKE '%/%' AND CAST(:ip AS varchar) IS NOT NULL)
   OR (f.kind = 'card_last4' AND f.value = CAST(:card_last4 AS varchar))
   OR (f.kind = 'card_hash' AND f.value = CAST(:card_hash AS varchar))
UNION ALL
SELECT NULL, NULL, NULL, NULL, count(*)
FROM order_history o
WHERE CAST(:since AS timestamptz) IS NOT NULL
  AND o.store_id = :store_id
  AND o.customer_id = CAST(:customer_id AS varchar)
  AND o.status = 'expired'
  AND o.order_type = 'payin'
  AND o.created_at >= CAST(:since AS timestamptz)
"""
)


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _normal_ip(raw: str | None) -> _Address | None:
    if not raw:
        return None
    try:
        return ipaddress.ip_address(raw.strip())
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _list_address(value: str) -> _Address | _Network | None:
    """A list entry's address or network, parsed once per process (every order with an address
    is matched against every network entry)."""
    try:
        if "/" in value:
            return ipaddress.ip_network(value, strict=False)
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _ip_matches(value: str, ip: _Address) -> bool:
    entry = _list_address(value)
    if isinstance(entry, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return ip in entry
    return entry is not None and ip == entry


def _list_hits(
    session: Session,
    *,
    store_id: int,
    customer_id: str | None,
    customer_ip: str | None,
    card_last4: str | None = None,
    card_number: str | None = None,
    unpaid_since: datetime | None = None,
) -> _ListHits:
    """The list entries matching the order's customer id, address and card, and, when
    `unpaid_since` is given, the customer's unpaid expired PayIns since then: one statement."""
    ip = _normal_ip(customer_ip)
    card_hash = fingerprint(card_number) if card_number else None
    if not (customer_id or ip or card_last4 or card_hash):
        return _ListHits([], False, False)
    found = session.execute(
        _LOOKUP,
        {
            "customer_values": [customer_id, f"{store_id}:{customer_id}"] if customer_id else [],
            "ip": str(ip) if ip is not None else None,
            "card_last4": card_last4 or None,
            "card_hash": card_hash,
            "since": unpaid_since if customer_id else None,
            "store_id": store_id,
            "customer_id": customer_id,
        },
    ).all()
    # The count's row is the one without an entry (UNION ALL promises no order of its rows).
    unpaid = next(int(r.unpaid) for r in found if r.id is None)
    rows = [(r.id, r.kind, r.value, r.list_type) for r in found if r.id is not None]
    blocked: list[tuple[FraudRule, dict[str, Any]]] = []
    allowed_customer = allowed_ip = False
    rules = {
        FraudListKind.CUSTOMER_ID.value: FraudRule.BLOCKLIST_CUSTOMER_ID,
        FraudListKind.IP.value: FraudRule.BLOCKLIST_IP,
        FraudListKind.CARD_LAST4.value: FraudRule.BLOCKLIST_CARD_LAST4,
        FraudListKind.CARD_HASH.value: FraudRule.BLOCKLIST_CARD_HASH,
    }
    for entry_id, kind, value, list_type in rows:
        if kind == FraudListKind.IP.value and (ip is None or not _ip_matches(value, ip)):
            continue
        if list_type == FraudListType.BLOCK.value:
            blocked.append((rules[kind], {"entry_id": entry_id}))
        elif kind == FraudListKind.CUSTOMER_ID.value:
            allowed_customer = True
        elif kind == FraudListKind.IP.value:
            allowed_ip = True
    blocked.sort(key=lambda hit: list(FraudRule).index(hit[0]))
    return _ListHits(blocked, allowed_customer, allowed_ip, unpaid)


# --------------------------------------------------------------------------- velocity

# KEYS[1]: the order's marker; KEYS[2..]: its counters. ARGV[1]: TTL; ARGV[2..]: dimension names.
# Atomic: two processes checking orders at once each get their own distinct counts.
_VELOCITY_LUA = """
local seen = redis.call('GET', KEYS[1])
if seen then return seen end
local parts = {}
for i = 2, #KEYS do
  local n = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  parts[#parts + 1] = ARGV[i] .. '=' .. n
end
local joined = table.concat(parts, ',')
redis.call('SET', KEYS[1], joined, 'EX', ARGV[1])
return joined
"""

_VELOCITY_MAX = {
    "customer": "FRAUD_VELOCITY_MAX_PER_CUSTOMER",
    "ip": "FRAUD_VELOCITY_MAX_PER_IP",
    "store": "FRAUD_VELOCITY_MAX_PER_STORE",
}
_VELOCITY_RULE = {
    "customer": FraudRule.VELOCITY_CUSTOMER,
    "ip": FraudRule.VELOCITY_IP,
    "store": FraudRule.VELOCITY_STORE,
}


def key_prefix() -> str:
    """Where the velocity counters live in Redis."""
    return KEY_PREFIX_OVERRIDE or f"{namespace()}:fraud"


def window_of(created_at: datetime, window_seconds: int) -> tuple[int, datetime]:
    """The fixed window holding `created_at`: its index and its start."""
    index = int(created_at.timestamp()) // window_seconds
    return index, datetime.fromtimestamp(index * window_seconds, UTC)


def count_in_redis(
    client: Any, *, marker: str, counters: dict[str, str], ttl_seconds: int
) -> dict[str, int]:
    """Count one order once in each of `counters` ({dimension: key}); its counts per dimension."""
    script = client.register_script(_VELOCITY_LUA)
    raw = script(keys=[marker, *counters.values()], args=[ttl_seconds, *counters.keys()])
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    counts: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        counts[name] = int(value)
    return counts


def _dimension_filter(order: IncomingOrder, dimension: str) -> list[Any]:
    if dimension == "customer":
        return [
            IncomingOrder.store_id == order.store_id,
            IncomingOrder.customer_id == order.customer_id,
        ]
    if dimension == "ip":
        return [IncomingOrder.customer_ip == order.customer_ip]
    return [IncomingOrder.store_id == order.store_id]


def count_in_database(
    session: Session, *, order: IncomingOrder, dimensions: list[str], window_start: datetime
) -> dict[str, int]:
    """The fallback: orders of each dimension created in the window up to and including `order`."""
    counts: dict[str, int] = {}
    for dimension in dimensions:
        stmt = select(func.count()).where(
            IncomingOrder.created_at >= window_start,
            IncomingOrder.created_at <= order.created_at,
            IncomingOrder.id <= order.id,
            *_dimension_filter(order, dimension),
        )
        counts[dimension] = int(session.scalar(stmt) or 0)
    return counts


def _velocity(
    session: Session, order: IncomingOrder, hits: _ListHits
) -> tuple[list[_Fired], dict[str, Any]]:
    window = max(1, int(_setting(session, "FRAUD_VELOCITY_WINDOW_SECONDS") or 3600))
    values = {
        "customer": f"{order.store_id}:{order.customer_id}"
        if order.customer_id and not hits.allowed_customer
        else None,
        "ip": order.customer_ip if order.customer_ip and not hits.allowed_ip else None,
        "store": str(order.store_id),
    }
    limits = {dim: _setting(session, key) for dim, key in _VELOCITY_MAX.items()}
    active = [dim for dim, v in values.items() if v is not None and limits[dim]]
    if not active:
        return [], {}
    index, start = window_of(order.created_at, window)
    prefix = key_prefix()
    counters = {dim: f"{prefix}:v:{dim}:{values[dim]}:{window}:{index}" for dim in active}
    try:
        counts = count_in_redis(
            get_redis(REDIS_URL_OVERRIDE),
            marker=f"{prefix}:seen:{order.public_id}",
            counters=counters,
            ttl_seconds=2 * window,
        )
        source = "redis"
    except REDIS_ERRORS as exc:
        log.warning("fraud_velocity_redis_unavailable", error=repr(exc), order=order.public_id)
        counts = count_in_database(session, order=order, dimensions=active, window_start=start)
        source = "database"
    fired = [
        _Fired(
            _VELOCITY_RULE[dim],
            FraudOutcome.DENY,
            {"count": counts[dim], "max": int(limits[dim]), "window_seconds": window},
        )
        for dim in active
        if dim in counts and counts[dim] > int(limits[dim])
    ]
    return fired, {"velocity_source": source, "velocity_counts": counts}


# --------------------------------------------------------------------------- other rules


def _amount_rules(session: Session, order: IncomingOrder) -> list[_Fired]:
    fired: list[_Fired] = []
    deny, review = (
        _setting(session, "FRAUD_DENY_THRESHOLD"),
        _setting(session, "FRAUD_MANUAL_REVIEW_THRESHOLD"),
    )
    amount = order.amount_fiat
    if deny is not None and amount > Decimal(deny):
        fired.append(
            _Fired(FraudRule.AMOUNT_DENY, FraudOutcome.DENY, {"amount": amount, "limit": deny})
        )
    if review is not None and amount > Decimal(review):
        fired.append(
            _Fired(
                FraudRule.AMOUNT_REVIEW, FraudOutcome.REVIEW, {"amount": amount, "limit": review}
            )
        )
    return fired


@dataclass(frozen=True)
class _UnpaidWindow:
    """The harvesting rule's terms for one order: at `limit` unpaid expired PayIns of its customer
    since `since` (`hours` before the check), the order goes to review."""

    since: datetime
    hours: int
    limit: int


def _unpaid_window(session: Session, order: IncomingOrder, now: datetime) -> _UnpaidWindow | None:
    """The harvesting rule's terms for `order`; None when the rule does not apply to it (off, no
    limit, not a PayIn, no customer id), and then `_list_hits` counts nothing."""
    limit = _setting(session, "FRAUD_UNPAID_EXPIRED_MAX")
    if not (
        _on(session, "FRAUD_RULE_UNPAID_EXPIRED_ENABLED")
        and limit
        and order.order_type == OrderType.PAYIN
        and order.customer_id
    ):
        return None
    hours = int(_setting(session, "FRAUD_UNPAID_EXPIRED_WINDOW_HOURS") or 24)
    return _UnpaidWindow(since=now - timedelta(hours=hours), hours=hours, limit=int(limit))


def _harvesting(window: _UnpaidWindow, hits: _ListHits) -> list[_Fired]:
    """The harvesting rule on the count `_list_hits` read for `window`."""
    count = hits.unpaid_expired
    if hits.allowed_customer or count < window.limit:
        return []
    detail = {"count": count, "max": window.limit, "window_hours": window.hours}
    return [_Fired(FraudRule.UNPAID_EXPIRED, FraudOutcome.REVIEW, detail)]


def review_released(session: Session, *, public_id: str) -> bool:
    """Whether a human released this order from manual review."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    AuditLog.target_entity == "order",
                    AuditLog.target_id == public_id,
                    AuditLog.action == RELEASED_ACTION,
                )
            )
        )
    )


# --------------------------------------------------------------------------- checks


def check_incoming_order(
    session: Session, *, order: IncomingOrder, now: datetime | None = None
) -> FraudDecision:
    """Decide whether `order` may be assigned (counts it for velocity once; writes nothing)."""
    if not _on(session, "FRAUD_CHECKS_ENABLED"):
        return ALLOW
    now = now or utcnow()
    is_payout = order.order_type == OrderType.PAYOUT
    unpaid = _unpaid_window(session, order, now)
    hits = _list_hits(
        session,
        store_id=order.store_id,
        customer_id=order.customer_id,
        customer_ip=order.customer_ip,
        card_last4=order.beneficiary_last4 if is_payout else None,
        card_number=order.beneficiary_number if is_payout else None,
        unpaid_since=unpaid.since if unpaid else None,
    )
    fired: list[_Fired] = []
    extra: dict[str, Any] = {}
    if _on(session, "FRAUD_RULE_BLOCKLIST_ENABLED"):
        fired += [_Fired(rule, FraudOutcome.DENY, detail) for rule, detail in hits.blocked]
    if _on(session, "FRAUD_RULE_AMOUNT_ENABLED"):
        fired += _amount_rules(session, order)
    if _on(session, "FRAUD_RULE_VELOCITY_ENABLED"):
        velocity_fired, extra = _velocity(session, order, hits)
        fired += velocity_fired
    if unpaid:
        fired += _harvesting(unpaid, hits)
    if any(f.outcome == FraudOutcome.REVIEW for f in fired) and review_released(
        session, public_id=order.public_id
    ):
        fired = [f for f in fired if f.outcome != FraudOutcome.REVIEW]
        extra["review_released"] = True
    return _decide(fired, extra)


def check_order_confirmation(session: Session, *, order: OrderHistory) -> FraudDecision:
    """Decide whether the payer's confirmation of `order` may mark it paid (block lists again)."""
    if not (_on(session, "FRAUD_CHECKS_ENABLED") and _on(session, "FRAUD_RULE_BLOCKLIST_ENABLED")):
        return ALLOW
    hits = _list_hits(
        session,
        store_id=order.store_id,
        customer_id=order.customer_id,
        customer_ip=order.customer_ip,
    )
    fired = [_Fired(rule, FraudOutcome.DENY, detail) for rule, detail in hits.blocked]
    return _decide(fired, {})


def record_decision(
    session: Session,
    *,
    public_id: str,
    decision: FraudDecision,
    stage: str = "intake",
    ip_address: str | None = None,
) -> None:
    """Audit a non-ALLOW decision (flushes); a REVIEW also alerts once the caller commits.
    `ip_address`: the client's when a request is screened (the payer's confirmation)."""
    if decision.outcome == FraudOutcome.ALLOW:
        return
    fired = FRAUD_DECISIONS_TOTAL.labels(decision.rule or "unknown", decision.outcome.value, stage)
    call_after_commit(session, fired.inc, label="fraud_decision_metric")
    log_event(
        session,
        action=f"fraud.{decision.outcome.value}",
        target_entity="order",
        target_id=public_id,
        details={
            "rule": decision.rule,
            "outcome": decision.outcome.value,
            "stage": stage,
            **decision.details,
        },
        ip_address=ip_address,
        level=AuditLevel.WARNING,
    )
    if decision.outcome == FraudOutcome.REVIEW:
        rule = decision.rule

        def _alert() -> None:
            notify_alert("order held for fraud review", order=public_id, rule=rule, stage=stage)

        call_after_commit(session, _alert, label="fraud_review_alert")


def screen_payer_confirmation(
    session: Session, *, public_id: str, ip_address: str | None = None
) -> FraudDecision | None:
    """Run the confirmation check on a pending PayIn and record a non-ALLOW decision.

    Returns that decision (the caller opens the dispute instead of marking the order paid), or
    None when the confirmation may proceed. The rule engine decides; it never moves an order.
    """
    order = session.scalars(select(OrderHistory).where(OrderHistory.public_id == public_id)).first()
    if order is None or order.status != OrderStatus.PENDING.value:
        return None
    decision = check_order_confirmation(session, order=order)
    if decision.outcome == FraudOutcome.ALLOW:
        return None
    record_decision(
        session,
        public_id=public_id,
        decision=decision,
        stage="confirmation",
        ip_address=ip_address,
    )
    return decision
