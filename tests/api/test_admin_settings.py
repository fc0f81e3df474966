"""Run-time settings through the admin API: every declared key accepts a valid value and refuses an
invalid one (nothing written), DELETE returns to the default, changes are audited with old and new
values, and a changed rate limit or retry delay reaches a running server and a running worker
without a restart."""

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
from jivapay.utils.config_loader import SETTINGS
from tests.api.admin_helpers import admin_client, bearer, free_port, make_staff, row_counts

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
    ConfigValueType.JSON: [[0], "not a list", []],
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
            return ["lots", "0/minute", 5, ""]
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
    from tests.factories import make_incoming, make_reference, make_store

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
