"""Process settings read from the environment or `.env`.

Only what a process needs before it can reach the database lives here; business settings that admins
change at run time live in `configuration_settings` and are read through `utils.config_loader`.
In production the process refuses to start with a missing or default secret.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development defaults. They make a fresh clone run without configuration and are refused in production.
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me-0123456789abcdef"  # noqa: S105
DEV_DATA_ENCRYPTION_KEY = "ZGV2LWluc2VjdXJlLWRhdGEta2V5LWNoYW5nZS1tZSE="


def split_keys(value: str) -> list[str]:
    """The keys of a comma-separated key list (`DATA_ENCRYPTION_KEY`), in order, blanks dropped."""
    return [key.strip() for key in value.split(",") if key.strip()]


def _is_fernet_key(key: str) -> bool:
    from cryptography.fernet import Fernet

    try:
        Fernet(key)
    except ValueError:
        return False
    return True


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class InsecureSettingsError(RuntimeError):
    """Raised at start-up when production runs with a missing or default secret."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    ENVIRONMENT: Environment = Environment.DEVELOPMENT

    DATABASE_URL: str | None = None
    REDIS_URL: str | None = None
    CELERY_BROKER_URL: str | None = None
    CELERY_RESULT_BACKEND: str | None = None
    # The queue tasks are sent to and workers consume by default (one deployment per queue).
    CELERY_TASK_QUEUE: str = "celery"

    SENTRY_DSN: str | None = None
    SENTRY_TRACES_SAMPLE_RATE: float = 0.0

    SECRET_KEY: str = DEV_SECRET_KEY
    ALGORITHM: str = "HS256"
    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=60, ge=1)
    # One Fernet key, or several comma-separated newest first while rotating (docs/deploy.md).
    DATA_ENCRYPTION_KEY: str = DEV_DATA_ENCRYPTION_KEY
    # The HMAC key of card and account number hashes (duplicate check, fraud lists). Unset: the
    # single DATA_ENCRYPTION_KEY, as before rotation existed. It must not change when the encryption
    # key rotates (blocklisted card hashes cannot be recomputed), so several encryption keys require it.
    DATA_FINGERPRINT_KEY: str | None = None

    S3_ACCESS_KEY: str | None = None
    S3_SECRET_KEY: str | None = None
    S3_BUCKET_NAME: str = "jivapay-receipts"
    S3_ENDPOINT_URL: str | None = None
    S3_REGION: str = "us-east-1"

    PUBLIC_BASE_URL: str = "http://127.0.0.1:8003"
    # Reverse proxies whose X-Forwarded-For/-Proto the servers believe (comma-separated IPs or
    # CIDRs, e.g. "10.0.0.5,10.1.0.0/16"). Empty: forwarded headers are ignored and the client is
    # the TCP peer, so nobody can pick the IP they are rate limited by.
    TRUSTED_PROXIES: str = ""
    # Request bodies larger than these are refused (413) before they are read.
    MAX_JSON_BODY_BYTES: int = Field(default=1024 * 1024, ge=1024)
    MAX_MULTIPART_BODY_BYTES: int = Field(default=52 * 1024 * 1024, ge=1024)
    # Slow clients (servers/http_protocol.py): a request's headers must arrive within this many
    # seconds of the connection (or of the previous response), its body within the second figure.
    HTTP_HEADER_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    HTTP_BODY_TIMEOUT_SECONDS: float = Field(default=60.0, gt=0)
    # /docs and /openapi.json: on by default except in production.
    DOCS_ENABLED: bool | None = None
    # Serve /metrics on this port of METRICS_HOST (internal) instead of on the public servers.
    METRICS_PORT: int | None = Field(default=None, ge=1, le=65535)
    METRICS_HOST: str = "127.0.0.1"
    CALLBACK_ALLOW_PRIVATE_NETWORKS: bool = False

    JIVAPAY_ADMIN_EMAIL: str = "admin@jivapay.local"
    JIVAPAY_ADMIN_PASSWORD: str | None = None
    # Where `jivapay up` keeps the embedded servers' data, pid files and the demo credentials.
    JIVAPAY_HOME: str = ".jivapay"

    LOG_LEVEL: str = "INFO"
    LOG_JSON: bool = True
    # Connections kept, and opened beyond them at a peak (closed again on return). An API process
    # holds one per request in flight: a pool below its usual concurrency opens and closes
    # connections all the time (docs/performance.md, "A pool that churns").
    DB_POOL_SIZE: int = Field(default=20, ge=1)
    DB_MAX_OVERFLOW: int = Field(default=10, ge=0)
    # A pooled connection idle this long is pinged before use; 0 pings on every checkout.
    DB_PING_IDLE_SECONDS: float = Field(default=1.0, ge=0)

    # Comma-separated networks (CIDR) whose clients may read `/metrics` on the API port; empty: any.
    METRICS_ALLOWED_NETWORKS: str = ""

    @property
    def metrics_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in self.METRICS_ALLOWED_NETWORKS.split(",")
            if part.strip()
        ]

    @model_validator(mode="after")
    def _check_metrics_networks(self) -> Settings:
        try:
            self.metrics_networks  # noqa: B018 - parsed for validation
        except ValueError as exc:
            raise ValueError(f"METRICS_ALLOWED_NETWORKS: {exc}") from exc
        return self

    @property
    def fingerprint_key(self) -> str:
        if self.DATA_FINGERPRINT_KEY:
            return self.DATA_FINGERPRINT_KEY
        # Byte for byte what hashed numbers before DATA_FINGERPRINT_KEY existed.
        return self.DATA_ENCRYPTION_KEY

    @model_validator(mode="after")
    def _pin_fingerprint_key_while_rotating(self) -> Settings:
        if len(split_keys(self.DATA_ENCRYPTION_KEY)) > 1 and not self.DATA_FINGERPRINT_KEY:
            raise ValueError(
                "DATA_ENCRYPTION_KEY holds several keys: set DATA_FINGERPRINT_KEY to the key stored "
                "number hashes were made with (the previous single DATA_ENCRYPTION_KEY)"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.ENVIRONMENT == Environment.PRODUCTION

    @property
    def celery_broker_url(self) -> str | None:
        return self.CELERY_BROKER_URL or self.REDIS_URL

    @property
    def celery_result_backend(self) -> str | None:
        return self.CELERY_RESULT_BACKEND or self.REDIS_URL

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if not self.is_production:
            return self
        problems = []
        if not self.SECRET_KEY or self.SECRET_KEY == DEV_SECRET_KEY or len(self.SECRET_KEY) < 32:
            problems.append("SECRET_KEY (missing, default or shorter than 32 characters)")
        keys = split_keys(self.DATA_ENCRYPTION_KEY)
        if not keys or DEV_DATA_ENCRYPTION_KEY in keys:
            problems.append("DATA_ENCRYPTION_KEY (missing or default)")
        elif not all(_is_fernet_key(key) for key in keys):
            # Refused here rather than by the first request that reads a card number.
            problems.append("DATA_ENCRYPTION_KEY (not a Fernet key; docs/deploy.md makes one)")
        if self.DATA_FINGERPRINT_KEY == DEV_DATA_ENCRYPTION_KEY:
            problems.append("DATA_FINGERPRINT_KEY (default)")
        if problems:
            raise InsecureSettingsError(
                "refusing to start in production with insecure settings: " + "; ".join(problems)
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def reset_settings_cache() -> None:
    """Forget the cached settings (tests and `jivapay up` change the environment)."""
    get_settings.cache_clear()
