"""StrEnums shared by models, schemas and services; the database stores their values as text."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    SUPPORT = "support"
    TEAMLEAD = "teamlead"
    MERCHANT = "merchant"
    TRADER = "trader"


class OrderType(StrEnum):
    PAYIN = "payin"
    PAYOUT = "payout"


class IncomingOrderStatus(StrEnum):
    NEW = "new"
    RETRYING = "retrying"
    ASSIGNED = "assigned"
    FAILED = "failed"
    MANUAL_REVIEW = "manual_review"


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    COMPLETED = "completed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    DISPUTED = "disputed"


TERMINAL_ORDER_STATUSES = frozenset(
    {OrderStatus.COMPLETED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
)


class RequisiteStatus(StrEnum):
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    BLOCKED = "blocked"
    ARCHIVED = "archived"


class BalanceOperation(StrEnum):
    FREEZE = "freeze"
    RELEASE = "release"
    PAYIN = "payin"
    PAYOUT = "payout"
    COMMISSION = "commission"
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    ADJUSTMENT = "adjustment"


class DocumentKind(StrEnum):
    CLIENT_RECEIPT = "client_receipt"
    TRADER_RECEIPT = "trader_receipt"
    DISPUTE_EVIDENCE = "dispute_evidence"


class CallbackStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DISABLED = "disabled"


class FraudListKind(StrEnum):
    CUSTOMER_ID = "customer_id"
    IP = "ip"
    CARD_LAST4 = "card_last4"
    CARD_HASH = "card_hash"


class FraudListType(StrEnum):
    BLOCK = "block"
    ALLOW = "allow"


class AuditLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class ConfigValueType(StrEnum):
    INT = "int"
    FLOAT = "float"
    DECIMAL = "decimal"
    BOOL = "bool"
    STR = "str"
    JSON = "json"


class RateSource(StrEnum):
    MANUAL = "manual"
    HTTP = "http"
    SEED = "seed"


class OrderSearchSort(StrEnum):
    """Sort orders of the staff order search: by creation time or fiat amount, `-` descending."""

    CREATED_DESC = "-created_at"
    CREATED_ASC = "created_at"
    AMOUNT_DESC = "-amount"
    AMOUNT_ASC = "amount"


class DisputeState(StrEnum):
    """Which disputes the staff list shows: still open, already resolved, or both."""

    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"
