"""`jivapay up` says loudly when the rate limiter's storage fails (it fails open otherwise)."""

from __future__ import annotations

import pytest

from jivapay import cli
from jivapay.config import get_settings


def test_up_banner_shouts_when_the_limiter_storage_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(get_settings(), "REDIS_URL", "redis://127.0.0.1:1/0")

    cli._print_rate_limiter()

    captured = capsys.readouterr()
    assert "rate limiter storage FAILING" in captured.err
    assert "WITHOUT rate limits" in captured.err


def test_up_banner_says_the_limiter_works(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, redis_url: str
):
    monkeypatch.setattr(get_settings(), "REDIS_URL", redis_url)

    cli._print_rate_limiter()

    assert "rate limiter" in capsys.readouterr().out
