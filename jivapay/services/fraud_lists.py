"""Block and allow lists of the fraud checks (`fraud_lists`): adding, removing and listing entries,
each change audited. The admin endpoints call these; `fraud_detector` reads the table directly.

Kinds and what a value means:
- `customer_id`: the store's customer id, matching every store, or `"<store_id>:<customer_id>"` for
  one store only (customer ids are the merchants' own, so the same text may name different people);
- `ip`: an address (`203.0.113.7`) or a network in CIDR form (`203.0.113.0/24`), IPv4 or IPv6;
- `card_last4`: the last four digits of a PayOut beneficiary card (coarse: blocks every card ending
  so);
- `card_hash`: a keyed hash of the full card number (`card_hash_of(number)`, HMAC with
  `DATA_FINGERPRINT_KEY`), so a card is blocked without storing its number. `add_entry` accepts the
  full number for this kind and stores only the hash.
Block entries deny; allow entries exempt a customer id or IP from the velocity and card-harvesting
rules (never from block lists or amount thresholds; a value on both lists is blocked).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from jivapay.database.models import FraudList
from jivapay.database.types import fingerprint
from jivapay.database.utils import integrity_errors_as_domain_errors
from jivapay.enums import FraudListKind, FraudListType
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import DuplicateObject, NotFound, ValidationFailed

_MAX_VALUE = 255


@dataclass(frozen=True)
class FraudListEntry:
    id: int
    kind: FraudListKind
    value: str
    list_type: FraudListType
    reason: str | None
    created_by_user_id: int | None
    created_at: datetime


def _view(row: FraudList) -> FraudListEntry:
    return FraudListEntry(
        id=row.id,
        kind=FraudListKind(row.kind),
        value=row.value,
        list_type=FraudListType(row.list_type),
        reason=row.reason,
        created_by_user_id=row.created_by_user_id,
        created_at=row.created_at,
    )


def card_hash_of(number: str) -> str:
    """The `card_hash` value of a card number (digits only, keyed hash)."""
    return fingerprint(number)


def normalize_value(kind: FraudListKind, value: str) -> str:
    """The stored form of a list value; `ValidationFailed` when it is not valid for its kind."""
    text = value.strip()
    if not text:
        raise ValidationFailed("value must not be empty")
    if kind == FraudListKind.IP:
        try:
            if "/" in text:
                return str(ipaddress.ip_network(text, strict=False))
            return str(ipaddress.ip_address(text))
        except ValueError as exc:
            raise ValidationFailed(f"not an IP address or network: {text!r}") from exc
    if kind == FraudListKind.CARD_LAST4:
        if not (len(text) == 4 and text.isascii() and text.isdigit()):
            raise ValidationFailed("card_last4 must be four digits")
        return text
    if kind == FraudListKind.CARD_HASH:
        digits = text.replace(" ", "").replace("-", "")
        if digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19:
            return card_hash_of(digits)  # a full number was given: keep only its hash
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower()):
            return text.lower()
        raise ValidationFailed("card_hash must be a card number or its 64-hex hash")
    if len(text) > _MAX_VALUE:
        raise ValidationFailed(f"value longer than {_MAX_VALUE} characters")
    return text


def add_entry(
    session: Session,
    *,
    kind: FraudListKind | str,
    value: str,
    list_type: FraudListType | str,
    reason: str | None,
    actor_user_id: int | None,
    ip_address: str | None = None,
) -> FraudListEntry:
    """Add a block or allow entry (a duplicate is `DuplicateObject`). Audited."""
    kind, list_type = FraudListKind(kind), FraudListType(list_type)
    row = FraudList(
        kind=kind.value,
        value=normalize_value(kind, value),
        list_type=list_type.value,
        reason=reason,
        created_by_user_id=actor_user_id,
    )
    duplicate = DuplicateObject("this entry is already on the list", code="duplicate_entry")
    with integrity_errors_as_domain_errors(
        session, {"uq_fraud_lists_kind_value_list_type": duplicate}
    ):
        session.add(row)
        session.flush()
    log_event(
        session,
        action="fraud_list.add",
        user_id=actor_user_id,
        target_entity="fraud_list",
        target_id=row.id,
        details={"kind": kind.value, "list": list_type.value, "value": row.value, "why": reason},
        ip_address=ip_address,
    )
    return _view(row)


def remove_entry(
    session: Session,
    *,
    entry_id: int,
    actor_user_id: int | None,
    reason: str | None = None,
    ip_address: str | None = None,
) -> FraudListEntry:
    """Delete an entry by id (`NotFound` when missing). Audited with the removed value."""
    row = session.get(FraudList, entry_id, with_for_update=True)
    if row is None:
        raise NotFound("fraud list entry not found")
    view = _view(row)
    session.delete(row)
    session.flush()
    log_event(
        session,
        action="fraud_list.remove",
        user_id=actor_user_id,
        target_entity="fraud_list",
        target_id=entry_id,
        details={
            "kind": view.kind.value,
            "list": view.list_type.value,
            "value": view.value,
            "why": reason,
        },
        ip_address=ip_address,
    )
    return view


def list_entries(
    session: Session,
    *,
    kind: FraudListKind | str | None = None,
    list_type: FraudListType | str | None = None,
    value: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[FraudListEntry]:
    """Entries filtered by kind, list and exact value, newest first."""
    stmt = select(FraudList).order_by(FraudList.id.desc()).limit(min(limit, 1000)).offset(offset)
    if kind is not None:
        stmt = stmt.where(FraudList.kind == FraudListKind(kind).value)
        if value is not None:
            value = normalize_value(FraudListKind(kind), value)
    if list_type is not None:
        stmt = stmt.where(FraudList.list_type == FraudListType(list_type).value)
    if value is not None:
        stmt = stmt.where(FraudList.value == value.strip())
    return [_view(row) for row in session.scalars(stmt)]
