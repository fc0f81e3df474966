"""Fraud checks run before assignment and at payer confirmation (domain.md §10).

The rules (amount thresholds, block lists, velocity, card harvesting) arrive with the side-channels
issue; until then every order is allowed. The order processor already routes DENY to `failed` and
REVIEW to `manual_review`, so adding rules changes nothing around them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.orm import Session

from jivapay.database.models import IncomingOrder


class FraudOutcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"


@dataclass(frozen=True)
class FraudDecision:
    outcome: FraudOutcome
    rule: str | None = None
    details: dict[str, object] = field(default_factory=dict)


ALLOW = FraudDecision(FraudOutcome.ALLOW)


def check_incoming_order(session: Session, *, order: IncomingOrder) -> FraudDecision:
    """Decide whether `order` may be assigned (no rules yet: always ALLOW)."""
    return ALLOW
