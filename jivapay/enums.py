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


class MerchantOrderStatus(StrEnum):
    """An order's status as its merchant sees it: the intake statuses until a trader is assigned
    (`new`, `retrying`, `manual_review`, `failed`), then the assigned order's status."""

    NEW = "new"
    RETRYING = "retrying"
    MANUAL_REVIEW = "manual_review"
    FAILED = "failed"
    PENDING = "pending"
    PAID = "paid"
    COMPLETED = "completed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    DISPUTED = "disputed"


TERMINAL_ORDER_STATUSES = frozenset(
    {OrderStatus.COMPLETED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
)


class StatsGrain(StrEnum):
    """The period one order statistics rollup row covers (UTC)."""

    DAY = "day"
    MONTH = "month"


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


class BalanceKind(StrEnum):
    """Which of a trader's balances: the crypto deposit or the fiat turnover."""

    CRYPTO = "crypto"
    FIAT = "fiat"


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


class RateRefreshStatus(StrEnum):
    """The outcome of one exchange-rate refresh."""

    DISABLED = "disabled"
    SKIPPED = "skipped"  # not due yet
    OK = "ok"  # the source was read; see what was updated and rejected
    FAILED = "failed"


class OnlineStatsSort(StrEnum):
    """Sort keys of `GET /requisites/online-stats`; a leading `-` sorts descending."""

    PRIORITY = "priority"
    PRIORITY_DESC = "-priority"
    LAST_USED = "last_used"
    LAST_USED_DESC = "-last_used"
    LIMITS = "limits"
    LIMITS_DESC = "-limits"


class ReferenceKindName(StrEnum):
    """The reference-data kinds of `/admin/reference/{kind}`."""

    COUNTRIES = "countries"
    FIAT_CURRENCIES = "fiat-currencies"
    CRYPTO_CURRENCIES = "crypto-currencies"
    BANKS = "banks"
    PAYMENT_METHODS = "payment-methods"
    BANK_METHODS = "bank-methods"
    TIME_ZONES = "time-zones"


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


class ActorKind(StrEnum):
    """Who asks for an order transition (`order_status_manager.Actor.kind`)."""

    PAYER = "payer"
    MERCHANT = "merchant"
    TRADER = "trader"
    SUPPORT = "support"
    ADMIN = "admin"
    SYSTEM = "system"


class OrderEvent(StrEnum):
    """An order transition asked of the state machine (`order_status_manager`)."""

    PAYER_CONFIRM = "payer_confirm"
    CONFIRM = "confirm"
    CANCEL = "cancel"
    EXPIRE = "expire"
    ESCALATE = "escalate"
    DISPUTE = "dispute"
    RESOLVE_COMPLETE = "resolve_complete"
    RESOLVE_CANCEL = "resolve_cancel"


class FraudOutcome(StrEnum):
    """What the fraud checks decide for an order."""

    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"


class FraudRule(StrEnum):
    """The fraud rule that fired (recorded with the decision)."""

    BLOCKLIST_CUSTOMER_ID = "blocklist_customer_id"
    BLOCKLIST_IP = "blocklist_ip"
    BLOCKLIST_CARD_LAST4 = "blocklist_card_last4"
    BLOCKLIST_CARD_HASH = "blocklist_card_hash"
    AMOUNT_DENY = "amount_deny"
    VELOCITY_CUSTOMER = "velocity_customer"
    VELOCITY_IP = "velocity_ip"
    VELOCITY_STORE = "velocity_store"
    AMOUNT_REVIEW = "amount_review"
    UNPAID_EXPIRED = "unpaid_expired"


class KeyKind(StrEnum):
    """What a rate limit counts by: the client IP, the authenticated principal, or the store key."""

    IP = "ip"
    PRINCIPAL = "principal"
    STORE = "store"


class ServerName(StrEnum):
    """The six API servers (`jivapay serve --role ...`)."""

    GATEWAY = "gateway"
    MERCHANT = "merchant"
    TRADER = "trader"
    TEAMLEAD = "teamlead"
    SUPPORT = "support"
    ADMIN = "admin"
