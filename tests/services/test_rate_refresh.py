"""The exchange-rate refresh against a LOCAL fake HTTP source (http.server in a thread): a good
body updates rates and cache; 500, timeout and garbage keep the old rates and alert; bad entries
(out of range, median outside buy/sell, a jump, also one racing a manual rate) are refused alone;
the beat task runs at most once per interval."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs

from jivapay.database.engine import get_engine
from jivapay.database.models import AuditLog, ExchangeRate
from jivapay.database.utils import atomic_transaction
from jivapay.services import rate_refresh, reference_data
from jivapay.utils.config_loader import set_config_value
from jivapay.utils.redis_client import get_redis
from jivapay.worker.reference_tasks import refresh_rates as refresh_task
from tests.factories import Ref, make_reference
from tests.lock_waits import wait_for_a_lock_wait

D = Decimal


@dataclass
class FakeSource:
    """What the fake source answers next, and what it was asked."""

    status: int = 200
    body: bytes = b"{}"
    delay: float = 0.0
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def answer(self, payload: Any, status: int = 200) -> None:
        self.status = status
        self.body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()


@pytest.fixture
def source() -> Iterator[FakeSource]:
    state = FakeSource()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if state.delay:
                time.sleep(state.delay)
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client timed out and went away
                self.wfile.write(state.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/rates?key=secret-token"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _clean_cache(services: dict[str, str]) -> Iterator[None]:
    yield
    reference_data.REDIS_URL_OVERRIDE = None
    reference_data.clear_cache()


def _entry(ref: Ref, buy: Any, sell: Any, median: Any = None) -> dict[str, Any]:
    entry = {"crypto": ref.crypto.code, "fiat": ref.fiat.code.lower(), "buy": buy, "sell": sell}
    if median is not None:
        entry["median"] = median
    return entry


def _row(db: Session, ref: Ref) -> ExchangeRate:
    db.expire_all()
    return db.scalars(
        select(ExchangeRate).where(
            ExchangeRate.crypto_currency_id == ref.crypto.id,
            ExchangeRate.fiat_currency_id == ref.fiat.id,
        )
    ).one()


def _alerts(logs: list[Any]) -> list[Any]:
    return [e for e in logs if e["event"] == "alert"]


def test_good_source_updates_rates_and_cache(db: Session, source: FakeSource) -> None:
    ref = make_reference(db, rate=D("100"))
    other = make_reference(db, rate=D("0.25"))
    cached = reference_data.get_exchange_rate(
        db, crypto_currency_id=ref.crypto.id, fiat_currency_id=ref.fiat.id
    )
    assert cached.median_rate == D("100")
    # JSON numbers, strings and more than 8 places; none may pass through a float.
    source.answer(
        {"rates": [_entry(ref, 101.123456789, "103.1"), _entry(other, "0.1", 0.3, "0.2")]}
    )

    result = rate_refresh.refresh_rates(url=source.url)
    assert result.status == "ok" and result.rejected == ()
    assert set(result.updated) == {
        f"{ref.crypto.code}/{ref.fiat.code}",
        f"{other.crypto.code}/{other.fiat.code}",
    }
    row = _row(db, ref)
    assert (row.buy_rate, row.sell_rate, row.source) == (D("101.12345679"), D("103.1"), "http")
    assert row.median_rate == D("102.11172840")  # midpoint, 8 places half up
    assert (_row(db, other).buy_rate, _row(db, other).median_rate) == (D("0.1"), D("0.2"))
    # The cache entry was dropped on commit: the next read sees the new rate.
    fresh = reference_data.get_exchange_rate(
        db, crypto_currency_id=ref.crypto.id, fiat_currency_id=ref.fiat.id
    )
    assert fresh.median_rate == D("102.11172840")
    audit = db.scalars(select(AuditLog).where(AuditLog.action == "exchange_rate.refresh")).all()
    assert any(f"{ref.crypto.code}/{ref.fiat.code}" in a.details["updated"] for a in audit)


@pytest.mark.parametrize(
    ("status", "body", "delay"),
    [
        (500, b'{"error": "boom"}', 0.0),
        (200, b"<html>not json</html>", 0.0),
        (200, b'{"data": []}', 0.0),
        (200, b'{"rates": []}', 1.6),  # slower than the 1 s timeout
    ],
    ids=["http-500", "not-json", "wrong-shape", "timeout"],
)
def test_failing_source_keeps_old_rates_and_alerts(
    db: Session, source: FakeSource, status: int, body: bytes, delay: float
) -> None:
    ref = make_reference(db, rate=D("100"))
    set_config_value(db, "RATE_REFRESH_TIMEOUT_SECONDS", 1)
    before = _row(db, ref).updated_at
    source.answer(body, status)
    source.delay = delay
    with capture_logs() as logs:
        result = rate_refresh.refresh_rates(url=source.url)
    assert result.status == "failed" and result.error
    row = _row(db, ref)
    assert (row.median_rate, row.source, row.updated_at) == (D("100"), "manual", before)
    alerts = _alerts(logs)
    assert len(alerts) == 1 and alerts[0]["message"] == "exchange rate source failed; rates kept"
    assert "secret-token" not in json.dumps(alerts[0], default=str)  # the query string stays out
    assert source.requests


def test_bad_entries_are_refused_alone(db: Session, source: FakeSource) -> None:
    good, jump, negative, zero = (make_reference(db, rate=D("100")) for _ in range(4))
    source.answer(
        {
            "rates": [
                _entry(good, "101", "103"),
                _entry(jump, "1000", "1000"),  # +900 %: over EXCHANGE_RATE_MAX_CHANGE_PERCENT
                _entry(negative, "-5", "10"),
                _entry(zero, 0, 0),
                {"crypto": "NOPE", "fiat": good.fiat.code, "buy": "1", "sell": "1"},
                "garbage",
                {"crypto": good.crypto.code, "fiat": good.fiat.code, "buy": True, "sell": "1"},
            ]
        }
    )
    with capture_logs() as logs:
        result = rate_refresh.refresh_rates(url=source.url)
    assert result.status == "ok"
    assert result.updated == (f"{good.crypto.code}/{good.fiat.code}",)
    assert len(result.rejected) == 6
    assert _row(db, good).median_rate == D("102")
    for ref in (jump, negative, zero):
        row = _row(db, ref)
        assert (row.median_rate, row.source) == (D("100"), "manual")
    alerts = _alerts(logs)
    assert len(alerts) == 1 and len(alerts[0]["rejected"]) == 6


def test_entry_beyond_numeric_is_refused_alone_not_crashing_the_refresh(
    db: Session, source: FakeSource
) -> None:
    # More than 20 integer digits: rounding it to 8 places used to raise InvalidOperation, which
    # crashed the whole refresh (no pair updated, no alert) instead of refusing the entry.
    good, huge, huger = (make_reference(db, rate=D("100")) for _ in range(3))
    source.answer(
        {
            "rates": [
                _entry(good, "101", "103"),
                _entry(huge, "100000000000000000000", "100000000000000000000"),
                _entry(huger, "1", "2", "1e30"),
            ]
        }
    )
    with capture_logs() as logs:
        result = rate_refresh.refresh_rates(url=source.url)
    assert result.status == "ok" and len(result.rejected) == 2, result
    assert all("too large" in reason for reason in result.rejected)
    assert _row(db, good).median_rate == D("102")
    assert _row(db, huge).median_rate == D("100") and _row(db, huger).median_rate == D("100")
    assert len(_alerts(logs)) == 1


def test_median_outside_buy_sell_is_refused_like_a_manual_rate(
    db: Session, source: FakeSource
) -> None:
    # +20 %: within the jump guard, but outside the source's own buy/sell spread.
    ref, good = make_reference(db, rate=D("100")), make_reference(db, rate=D("100"))
    source.answer({"rates": [_entry(ref, "100", "101", "120"), _entry(good, "100", "101", "100")]})
    result = rate_refresh.refresh_rates(url=source.url)
    assert result.updated == (f"{good.crypto.code}/{good.fiat.code}",)
    assert len(result.rejected) == 1 and "between buy_rate and sell_rate" in result.rejected[0]
    assert (_row(db, ref).median_rate, _row(db, ref).source) == (D("100"), "manual")
    assert _row(db, good).median_rate == D("100")


def test_jump_guard_checks_the_locked_row_not_a_rate_read_before_it(
    committed_db: sessionmaker[Session], source: FakeSource
) -> None:
    """An admin's manual rate committed while the refresh waits for the row lock: the source's
    value is compared with that rate (140 vs 300: -53 %, over the 50 % limit) and refused."""
    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("100"))
        crypto_id, fiat_id = ref.crypto.id, ref.fiat.id
        crypto, fiat = ref.crypto.code, ref.fiat.code
    source.answer({"rates": [{"crypto": crypto, "fiat": fiat, "buy": "140", "sell": "140"}]})
    results: list[Any] = []

    def refresh() -> None:
        try:
            results.append(rate_refresh.refresh_rates(url=source.url))
        except Exception as exc:
            results.append(exc)

    admin = committed_db()
    try:
        # The admin's transaction holds the row while the refresh reads and then waits for it.
        admin.execute(
            select(ExchangeRate)
            .where(ExchangeRate.crypto_currency_id == crypto_id)
            .with_for_update()
        ).all()
        worker = threading.Thread(target=refresh)
        worker.start()
        wait_for_a_lock_wait(
            get_engine().connect,
            query_like="%exchange_rates%",
            timeout=10,
            what="the refresh never waited for the admin's row lock",
        )
        reference_data.set_exchange_rate(
            admin, crypto=crypto_id, fiat=fiat_id, buy="300", sell="300"
        )
        admin.commit()
    finally:
        admin.close()
    worker.join(30)
    assert len(results) == 1 and not isinstance(results[0], Exception), results
    assert results[0].updated == () and len(results[0].rejected) == 1, results
    assert "too far from 300" in results[0].rejected[0]
    with atomic_transaction() as session:
        final = session.execute(
            select(ExchangeRate.median_rate, ExchangeRate.source).where(
                ExchangeRate.crypto_currency_id == crypto_id,
                ExchangeRate.fiat_currency_id == fiat_id,
            )
        ).one()
    assert tuple(final) == (D("300"), "manual")


def test_beat_task_runs_once_per_interval_and_is_off_without_url(
    db: Session, source: FakeSource
) -> None:
    ref = make_reference(db, rate=D("100"))
    client = get_redis()
    client.delete(rate_refresh._gate_key())
    try:
        assert rate_refresh.refresh_if_due().status == "disabled"
        set_config_value(db, "EXCHANGE_RATE_SOURCE_URL", source.url)
        set_config_value(db, "RATE_REFRESH_INTERVAL_SECONDS", 300)
        source.answer({"rates": [_entry(ref, "99", "99")]})
        first = refresh_task.apply().get()
        assert first["status"] == "ok" and first["updated"] == [
            f"{ref.crypto.code}/{ref.fiat.code}"
        ]
        assert 0 < client.ttl(rate_refresh._gate_key()) <= 300
        assert refresh_task.apply().get()["status"] == "skipped"
        assert len(source.requests) == 1
        assert _row(db, ref).median_rate == D("99")
    finally:
        client.delete(rate_refresh._gate_key())
