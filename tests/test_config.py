"""Environment settings: production refuses default or missing secrets and says which."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from jivapay.config import DEV_DATA_ENCRYPTION_KEY, DEV_SECRET_KEY, InsecureSettingsError, Settings


def test_development_runs_on_defaults() -> None:
    s = Settings(ENVIRONMENT="development", _env_file=None)  # type: ignore[call-arg]
    assert s.SECRET_KEY == DEV_SECRET_KEY
    assert not s.is_production


@pytest.mark.parametrize(
    ("secret", "data_key", "named"),
    [
        (DEV_SECRET_KEY, "uJtN3fHq1pNwQnx0N1y7n9rXJfKfUo2m2b3mJ6cQy5E=", ["SECRET_KEY"]),
        ("x" * 40, DEV_DATA_ENCRYPTION_KEY, ["DATA_ENCRYPTION_KEY"]),
        ("short", DEV_DATA_ENCRYPTION_KEY, ["SECRET_KEY", "DATA_ENCRYPTION_KEY"]),
        ("x" * 40, "changeme-please-set-a-real-key", ["DATA_ENCRYPTION_KEY (not a Fernet key"]),
    ],
    ids=["default-secret-key", "default-data-key", "both-weak", "not-fernet"],
)
def test_production_refuses_insecure_secrets(secret: str, data_key: str, named: list[str]) -> None:
    with pytest.raises(InsecureSettingsError) as info:
        Settings(  # type: ignore[call-arg]
            ENVIRONMENT="production",
            SECRET_KEY=secret,
            DATA_ENCRYPTION_KEY=data_key,
            _env_file=None,
        )
    for name in named:
        assert name in str(info.value)


def test_production_accepts_real_secrets() -> None:
    s = Settings(  # type: ignore[call-arg]
        ENVIRONMENT="production",
        SECRET_KEY="k" * 48,
        DATA_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        _env_file=None,
    )
    assert s.is_production


def test_celery_urls_fall_back_to_redis() -> None:
    s = Settings(REDIS_URL="redis://h:1/2", _env_file=None)  # type: ignore[call-arg]
    assert s.celery_broker_url == "redis://h:1/2"
    assert s.celery_result_backend == "redis://h:1/2"


def test_several_encryption_keys_require_a_pinned_fingerprint_key() -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with pytest.raises(ValueError, match="DATA_FINGERPRINT_KEY"):
        Settings(DATA_ENCRYPTION_KEY=f"{new},{old}", _env_file=None)  # type: ignore[call-arg]
    s = Settings(  # type: ignore[call-arg]
        DATA_ENCRYPTION_KEY=f" {new} , {old} ", DATA_FINGERPRINT_KEY=old, _env_file=None
    )
    assert s.fingerprint_key == old
    # One key and no pin: number hashes keep the key they were always made with.
    assert Settings(DATA_ENCRYPTION_KEY=old, _env_file=None).fingerprint_key == old  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("data_key", "fingerprint_key", "named"),
    [
        (
            f"{Fernet.generate_key().decode()},{DEV_DATA_ENCRYPTION_KEY}",
            "f" * 44,
            "DATA_ENCRYPTION_KEY",
        ),
        (Fernet.generate_key().decode(), DEV_DATA_ENCRYPTION_KEY, "DATA_FINGERPRINT_KEY"),
    ],
    ids=["dev-key-among-several", "dev-fingerprint-key"],
)
def test_production_refuses_the_development_key_anywhere(
    data_key: str, fingerprint_key: str, named: str
) -> None:
    with pytest.raises(InsecureSettingsError, match=named):
        Settings(  # type: ignore[call-arg]
            ENVIRONMENT="production",
            SECRET_KEY="k" * 48,
            DATA_ENCRYPTION_KEY=data_key,
            DATA_FINGERPRINT_KEY=fingerprint_key,
            _env_file=None,
        )
