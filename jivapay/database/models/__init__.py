"""The whole data model, split by area; import models from here."""

from jivapay.database.base import Base
from jivapay.database.models.balances import (
    BalancePlatform,
    BalancePlatformHistory,
    BalanceStore,
    BalanceStoreHistory,
    BalanceTrader,
    BalanceTraderCryptoHistory,
    BalanceTraderFiat,
    BalanceTraderFiatHistory,
)
from jivapay.database.models.identity import (
    Admin,
    Merchant,
    RoleModel,
    Support,
    TeamLead,
    Trader,
    TraderCommission,
    User,
)
from jivapay.database.models.merchants import MerchantStore, StoreCommission
from jivapay.database.models.orders import (
    CallbackDelivery,
    CallbackDeliveryAttempt,
    IdempotencyKey,
    IncomingOrder,
    OrderHistory,
    UploadedDocument,
)
from jivapay.database.models.reference import (
    AvailableBankMethod,
    Bank,
    Country,
    CryptoCurrency,
    ExchangeRate,
    FiatCurrency,
    PaymentMethod,
    TimeZone,
)
from jivapay.database.models.requisites import (
    FullRequisitesSettings,
    OwnerOfRequisites,
    ReqTrader,
    RequisiteDailyTurnover,
    RequisiteTurnoverBucket,
)
from jivapay.database.models.system import AuditLog, ConfigurationSetting, FraudList

__all__ = [
    "Admin",
    "AuditLog",
    "AvailableBankMethod",
    "BalancePlatform",
    "BalancePlatformHistory",
    "BalanceStore",
    "BalanceStoreHistory",
    "BalanceTrader",
    "BalanceTraderCryptoHistory",
    "BalanceTraderFiat",
    "BalanceTraderFiatHistory",
    "Bank",
    "Base",
    "CallbackDelivery",
    "CallbackDeliveryAttempt",
    "ConfigurationSetting",
    "Country",
    "CryptoCurrency",
    "ExchangeRate",
    "FiatCurrency",
    "FraudList",
    "FullRequisitesSettings",
    "IdempotencyKey",
    "IncomingOrder",
    "Merchant",
    "MerchantStore",
    "OrderHistory",
    "OwnerOfRequisites",
    "PaymentMethod",
    "ReqTrader",
    "RequisiteDailyTurnover",
    "RequisiteTurnoverBucket",
    "RoleModel",
    "StoreCommission",
    "Support",
    "TeamLead",
    "TimeZone",
    "Trader",
    "TraderCommission",
    "UploadedDocument",
    "User",
]
