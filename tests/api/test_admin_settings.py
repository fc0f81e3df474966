"""Run-time settings through the admin API: every declared key accepts a valid value and refuses an
invalid one (nothing written), every number accepts its declared bounds and refuses one step
beyond (the maximum does not break the code that reads it), DELETE returns to the default, changes
are audited with old and new values, and a changed rate limit or retry delay reaches a running
server and a running worker without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from jivapay.database.models import AuditLog, ConfigurationSetting, IncomingOrder
from jivapay.enums import ConfigValueType, IncomingOrderStatus, Role
from jivapay.utils import config_loader
from jivapay.utils.config_loader import SETTINGS, SettingSpec
from tests.api.admin_helpers import admin_client, bearer, free_port, make_staff, row_counts
from tests.factories import make_incoming, make_reference, make_store

_VALID_BY_TYPE: dict[ConfigValueType, tuple[Any, Any]] = {
    # (value sent, value answered)
    ConfigValueType.INT: (7, 7),
    ConfigValueType.DECIMAL: ("2.5", "2.5"),
    ConfigValueType.BOOL: (False, False),
    ConfigValueType.JSON: ([1, 5, 30], [1, 5, 30]),
}
_INVALID_BY_TYPE: dict[ConfigValueType, list[Any]] = {
    ConfigValueType.INT: ["7", 7.5, True, -1, 2**31],
    ConfigValueType.DECIMAL: [2.5, "-1", "1e3", "abc", True],
    ConfigValueType.BOOL: ["yes", 1, None],
    ConfigValueType.JSON: [[0], "not a list", [], [10**400], [86401]],
}


def _valid(key: str) -> tuple[Any, Any]:
    spec = SETTINGS[key]
    if spec.value_type == ConfigValueType.STR:
        if key.startswith("RATE_LIMIT_"):
            return "500/minute", "500/minute"
        return "https://rates.example.com/v1", "https://rates.example.com/v1"
    return _VALID_BY_TYPE[spec.value_type]


def _invalid(key: str) -> list[Any]:
    spec = SETTINGS[key]
    if spec.value_type == ConfigValueType.STR:
        if key.startswith("RATE_LIMIT_"):
            # The last two: windows beyond a day (the first one's Redis expiry is out of range).
            return ["lots", "0/minute", 5, "", "1/1000000000000 year", "5/minute;1/2 day"]
        return ["ftp://rates.example.com", "not a url", 5]
    bad = list(_INVALID_BY_TYPE[spec.value_type])
    if spec.default is None and None in bad:
        bad.remove(None)
    if spec.value_type == ConfigValueType.INT and spec.default is not None:
        bad.append(None)
    return bad


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_every_key_accepts_valid_and_refuses_invalid(db, key) -> None:  # type: ignore[no-untyped-def]
    client = admin_client()
    admin = make_staff(db, Role.ADMIN, ["settings:*"])
    sent, answered = _valid(key)
    r = client.put(f"/admin/settings/{key}", json={"value": sent}, headers=bearer(admin))
    assert r.status_code == 200, r.text
    assert r.json()["setting"]["value"] == answered and r.json()["changed"] is True
    assert config_loader.get_typed_config_value(key, db) == config_loader.parse_value(
        SETTINGS[key], config_loader.serialize_value(SETTINGS[key], r.json()["setting"]["value"])
    )
    audit = db.scalars(
        select(AuditLog).where(AuditLog.action == "setting.updated", AuditLog.target_id == key)
    ).one()
    assert audit.details["new"] == answered and audit.user_id == admin.id
    r = client.put(f"/admin/settings/{key}", json={"value": sent}, headers=bearer(admin))
    assert r.json()["changed"] is False

    before = row_counts(db)
    stored = db.get(ConfigurationSetting, key).value
    for bad in _invalid(key):
        r = client.put(f"/admin/settings/{key}", json={"value": bad}, headers=bearer(admin))
        assert r.status_code == 422, (key, bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert key in r.json()["detail"]
    db.expire_all()
    assert db.get(ConfigurationSetting, key).value == stored
    assert row_counts(db) == before

    r = client.delete(f"/admin/settings/{key}", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["setting"]["is_default"] is True
    default = SETTINGS[key].default
    assert r.json()["setting"]["value"] == (
        format(default, "f") if isinstance(default, Decimal) else default
    )


# --------------------------------------------------------------------------- bounds

_BOUNDED = sorted(key for key, spec in SETTINGS.items() if spec.maximum is not None)


def _step(spec: SettingSpec) -> Any:
    return Decimal("0.01") if spec.value_type == ConfigValueType.DECIMAL else 1


def _sent(spec: SettingSpec, number: Any) -> Any:
    """`number` as the admin API takes it for `spec`: a JSON integer, a decimal string, a list."""
    if spec.value_type == ConfigValueType.DECIMAL:
        return format(number, "f")
    if spec.value_type == ConfigValueType.JSON:
        return [number]
    return number


def _shown(spec: SettingSpec, bound: Any) -> Any:
    return format(bound, "f") if spec.value_type == ConfigValueType.DECIMAL else bound


def _put(key: str, value: Any, headers: dict[str, str]) -> Any:
    response = admin_client().put(f"/admin/settings/{key}", json={"value": value}, headers=headers)
    config_loader.invalidate_cache()  # as if the 5-second settings cache had expired
    return response


def test_every_number_has_declared_bounds() -> None:
    numeric = {
        key
        for key, spec in SETTINGS.items()
        if spec.value_type in (ConfigValueType.INT, ConfigValueType.DECIMAL, ConfigValueType.JSON)
    }
    assert set(_BOUNDED) == numeric
    for key in _BOUNDED:
        spec = SETTINGS[key]
        assert spec.minimum is not None and spec.maximum is not None
        assert spec.default is None or spec.minimum <= spec.default <= spec.maximum, key


@pytest.mark.parametrize("key", _BOUNDED)
def test_every_number_accepts_its_bounds_and_refuses_one_step_beyond(db, key) -> None:  # type: ignore[no-untyped-def]
    spec = SETTINGS[key]
    headers = bearer(make_staff(db, Role.ADMIN, ["settings:*"]))
    low, high = spec.minimum, spec.maximum
    for number in (high, low):
        r = _put(key, _sent(spec, number), headers)
        assert r.status_code == 200, r.text
        typed = config_loader.get_typed_config_value(key, db)
        assert typed == ([number] if spec.value_type == ConfigValueType.JSON else number)
        listed = r.json()["setting"]
        assert (listed["minimum"], listed["maximum"]) == (_shown(spec, low), _shown(spec, high))
    stored = db.get(ConfigurationSetting, key).value
    for number in (high + _step(spec), low - _step(spec)):
        r = _put(key, _sent(spec, number), headers)
        assert r.status_code == 422, (key, number, r.text)
        # The refusal names the bounds.
        detail = r.json()["detail"]
        assert f"between {_shown(spec, low)} and {_shown(spec, high)}" in detail, detail
    db.expire_all()
    assert db.get(ConfigurationSetting, key).value == stored


def test_idempotency_ttl_beyond_its_maximum_is_refused_and_the_maximum_replays(db) -> None:  # type: ignore[no-untyped-def]
    """Audit finding: IDEMPOTENCY_KEY_TTL_HOURS=100000000 was accepted (bound 2**31-1), and then
    every replay of an Idempotency-Key answered 500 (`now - timedelta(hours=...)` overflows)."""
    import json

    from fastapi.testclient import TestClient

    from jivapay.api_routers.gateway.router import router as gateway_router
    from jivapay.servers.app_factory import ServerName, build_app
    from tests.factories import gateway_headers

    client = TestClient(
        build_app(ServerName.GATEWAY, routers=[gateway_router]), raise_server_exceptions=False
    )

    def post_payin(body: dict[str, Any]) -> Any:
        raw = json.dumps(body).encode()
        path = "/gateway/payin/init"
        headers = gateway_headers(store, "POST", path, raw, idempotency_key="ttl-at-max")
        return client.post(path, content=raw, headers=headers)

    ref = make_reference(db)
    store = make_store(db, ref)
    headers = bearer(make_staff(db, Role.ADMIN, ["settings:*"]))
    db.commit()
    r = _put("IDEMPOTENCY_KEY_TTL_HOURS", 100_000_000, headers)
    assert r.status_code == 422, r.text
    assert "between 1 and 720" in r.json()["detail"]

    assert (
        _put(
            "IDEMPOTENCY_KEY_TTL_HOURS", SETTINGS["IDEMPOTENCY_KEY_TTL_HOURS"].maximum, headers
        ).status_code
        == 200
    )
    body = {
        "merchant_order_id": "ttl-at-max",
        "amount_fiat": "1000.00",
        "fiat_currency": ref.fiat.code,
        "customer_id": "cust-ttl",
    }
    first = post_payin(body)
    replay = post_payin(body)
    assert (first.status_code, replay.status_code) == (201, 201), replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_fraud_unpaid_window_beyond_its_maximum_is_refused_and_the_maximum_checks(db) -> None:  # type: ignore[no-untyped-def]
    """Audit finding: FRAUD_UNPAID_EXPIRED_WINDOW_HOURS=100000000 was accepted, and the fraud
    check of every PayIn with a customer id then raised OverflowError."""
    from jivapay.enums import FraudOutcome
    from jivapay.services.fraud_detector import check_incoming_order

    ref = make_reference(db)
    store = make_store(db, ref)
    incoming = make_incoming(db, store, ref)
    incoming.customer_id = "cust-window"
    headers = bearer(make_staff(db, Role.ADMIN, ["settings:*"]))
    db.commit()
    r = _put("FRAUD_UNPAID_EXPIRED_WINDOW_HOURS", 100_000_000, headers)
    assert r.status_code == 422, r.text
    assert "between 1 and 8760" in r.json()["detail"]

    maximum = SETTINGS["FRAUD_UNPAID_EXPIRED_WINDOW_HOURS"].maximum
    assert _put("FRAUD_UNPAID_EXPIRED_WINDOW_HOURS", maximum, headers).status_code == 200
    assert check_incoming_order(db, order=incoming).outcome == FraudOutcome.ALLOW


def test_assignment_batch_size_above_its_declared_maximum_is_refused(db) -> None:  # type: ignore[no-untyped-def]
    """Audit finding: the setting says 'up to 20' but accepted 1,000,000: a batch keeps every
    requisite and deposit it locked until commit, so a huge one stalls the other workers."""
    headers = bearer(make_staff(db, Role.ADMIN, ["settings:*"]))
    r = _put("ASSIGNMENT_BATCH_SIZE", 1_000_000, headers)
    assert r.status_code == 422, r.text
    assert "between 1 and 20" in r.json()["detail"]
    assert _put("ASSIGNMENT_BATCH_SIZE", 20, headers).status_code == 200


def test_the_retry_and_callback_maximums_do_not_overflow_their_readers() -> None:
    """At the maximum attempts, delay and factor the retry delay is still a day at most (the
    power stays inside Decimal's range); a schedule entry at its maximum is a valid wait."""
    from jivapay.services.callback_service import MAX_DELAY_SECONDS, next_retry_delay
    from jivapay.services.order_processor import retry_delay
    from jivapay.utils.config_loader import RuntimeSettings

    values = {key: spec.default for key, spec in SETTINGS.items()}
    for key in ("MAX_ORDER_RETRIES", "RETRY_DELAY_SECONDS", "RETRY_BACKOFF_FACTOR"):
        values[key] = SETTINGS[key].maximum
    settings = RuntimeSettings(**values)
    assert retry_delay(settings.MAX_ORDER_RETRIES, settings) == timedelta(days=1)
    longest = SETTINGS["CALLBACK_RETRY_SCHEDULE_SECONDS"].maximum
    attempts = SETTINGS["CALLBACK_MAX_ATTEMPTS"].maximum
    assert next_retry_delay(attempts, schedule=(float(longest),)) <= MAX_DELAY_SECONDS


def test_listing_unknown_key_and_permissions(db) -> None:  # type: ignore[no-untyped-def]
    client = admin_client()
    viewer = make_staff(db, Role.ADMIN, ["settings:view:all"])
    r = client.get("/admin/settings", headers=bearer(viewer))
    assert r.status_code == 200
    keys = [s["key"] for s in r.json()]
    assert keys == sorted(SETTINGS)
    retry = next(s for s in r.json() if s["key"] == "RETRY_BACKOFF_FACTOR")
    assert retry["value_type"] == "decimal" and retry["default"] == "2" and retry["description"]
    r = client.put("/admin/settings/RETRY_DELAY_SECONDS", json={"value": 3}, headers=bearer(viewer))
    assert r.status_code == 403
    editor = make_staff(db, Role.ADMIN, ["settings:*"])
    r = client.put("/admin/settings/NO_SUCH_KEY", json={"value": 3}, headers=bearer(editor))
    assert r.status_code == 404 and r.json()["code"] == "setting_not_found"
    assert client.delete("/admin/settings/NO_SUCH_KEY", headers=bearer(editor)).status_code == 404
    r = client.put("/admin/settings/RETRY_DELAY_SECONDS", json={}, headers=bearer(editor))
    assert r.status_code == 422
    r = client.put(
        "/admin/settings/RETRY_DELAY_SECONDS", json={"value": 3, "x": 1}, headers=bearer(editor)
    )
    assert r.status_code == 422


def test_the_audit_row_of_a_url_setting_keeps_no_credentials(db) -> None:  # type: ignore[no-untyped-def]
    admin = make_staff(db, Role.ADMIN, ["settings:*"])
    key = "sk_live_9f8e7d6c5b4a39281706"
    url = f"https://user:pw@rates.example.com:8443/v1/rates?api_key={key}"
    r = admin_client().put(
        "/admin/settings/EXCHANGE_RATE_SOURCE_URL", json={"value": url}, headers=bearer(admin)
    )
    assert r.status_code == 200, r.text
    assert r.json()["setting"]["value"] == url  # the setting itself is what the admin set
    [row] = db.scalars(
        select(AuditLog).where(
            AuditLog.target_entity == "setting", AuditLog.target_id == "EXCHANGE_RATE_SOURCE_URL"
        )
    ).all()
    assert row.details == {
        "old": "",
        "new": "https://rates.example.com:8443/v1/rates?[Filtered]",
    }


# --------------------------------------------------------------------------- live effect


@pytest.fixture
def merchant_server(committed_db, services, tmp_path):  # type: ignore[no-untyped-def]
    """A real merchant API server process (uvicorn) on the test database."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": services["database_url"],
        "REDIS_URL": services["redis_url"],
    }
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "jivapay.servers.merchant.server:app",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError((tmp_path / "server.log").read_text())
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_rate_limit_change_reaches_a_running_server(committed_db, merchant_server) -> None:  # type: ignore[no-untyped-def]
    with committed_db() as session:
        admin = make_staff(session, Role.ADMIN, ["settings:*"])
        session.commit()
        headers = bearer(admin)
    client = admin_client()
    # Warm the server's settings cache with the default (100/minute).
    for _ in range(4):
        assert httpx.get(f"{merchant_server}/merchant/me").status_code == 401
    r = client.put(
        "/admin/settings/RATE_LIMIT_DEFAULT", json={"value": "3/minute"}, headers=headers
    )
    assert r.status_code == 200
    changed_at = time.monotonic()
    while True:
        status = httpx.get(f"{merchant_server}/merchant/me").status_code
        if status == 429:
            break
        assert time.monotonic() - changed_at < config_loader.CACHE_SECONDS + 5, "limit not applied"
        time.sleep(0.3)
    assert client.delete("/admin/settings/RATE_LIMIT_DEFAULT", headers=headers).status_code == 200
    reset_at = time.monotonic()
    while httpx.get(f"{merchant_server}/merchant/me").status_code == 429:
        assert time.monotonic() - reset_at < config_loader.CACHE_SECONDS + 5, "default not back"
        time.sleep(0.3)


def _wait_retrying(factory, incoming_id: int) -> IncomingOrder:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with factory() as session:
            row = session.get(IncomingOrder, incoming_id)
            if row.status == IncomingOrderStatus.RETRYING.value and row.retry_count >= 1:
                return row
        time.sleep(0.2)
    raise AssertionError("the worker did not process the order")


def test_retry_delay_change_reaches_a_running_worker(committed_db, celery_worker) -> None:  # type: ignore[no-untyped-def]
    from jivapay.worker.tasks import process_order

    with committed_db() as session:
        admin = make_staff(session, Role.ADMIN, ["settings:*"])
        ref = make_reference(session, rate=Decimal("50"))
        store = make_store(session, ref)
        # No trader has a requisite: every attempt ends in `retrying` after RETRY_DELAY_SECONDS.
        first = make_incoming(session, store, ref).id
        session.commit()
        headers = bearer(admin)
    client = admin_client()
    r = client.put("/admin/settings/RETRY_DELAY_SECONDS", json={"value": 400}, headers=headers)
    assert r.status_code == 200
    celery_worker()
    process_order.apply_async(args=[first])
    row = _wait_retrying(committed_db, first)
    assert row.next_attempt_at - row.last_attempt_at == pytest.approx(
        timedelta(seconds=400), abs=timedelta(seconds=2)
    )

    r = client.put("/admin/settings/RETRY_DELAY_SECONDS", json={"value": 900}, headers=headers)
    assert r.status_code == 200
    time.sleep(config_loader.CACHE_SECONDS + 0.5)  # the worker's cache runs out; no restart
    # Made only now: the intake feed hands over the `new` orders it finds when it starts.
    with committed_db() as session:
        second = make_incoming(session, store, ref).id
        session.commit()
    process_order.apply_async(args=[second])
    row = _wait_retrying(committed_db, second)
    assert row.next_attempt_at - row.last_attempt_at == pytest.approx(
        timedelta(seconds=900), abs=timedelta(seconds=2)
    )
