"""The payer's page in a real browser (Playwright + Debian's Chromium) against the gateway on a real
port and a real Celery worker: every state in ru, en and kk at 360x740 and 1280x800, live changes
without reload, copy buttons, receipt + "I have paid", the trader's confirm, expiry, axe-core clean."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from jivapay.database.models import FiatCurrency, OrderHistory
from jivapay.database.utils import atomic_transaction
from jivapay.enums import Role
from jivapay.security import create_access_token
from jivapay.utils.config_loader import set_config_value
from tests.factories import gateway_headers, make_reference, make_requisite, make_store, make_trader

pytestmark = pytest.mark.slow

D = Decimal
CARD = "2200700011112222"
VIEWPORTS = [(360, 740), (1280, 800)]
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PENDING_HEADING = {
    "ru": "Переведите ровно эту сумму",
    "en": "Send exactly this amount",
    "kk": "Дәл осы соманы аударыңыз",
}
HEADINGS = {
    "looking": {
        "ru": "Ищем получателя",
        "en": "Looking for a recipient",
        "kk": "Алушыны іздеудеміз",
    },
    "paid": {"ru": "Оплата отмечена", "en": "Payment reported", "kk": "Төлем туралы хабарланды"},
    "completed": {"ru": "Платёж получен", "en": "Payment received", "kk": "Төлем қабылданды"},
    "expired": {"ru": "Время вышло", "en": "Time is up", "kk": "Уақыт бітті"},
}
# The payer's page must update by itself; these waits bound the worker and the poll backoff.
LIVE = 60_000


@pytest.fixture
def world(committed_db, gateway_url):  # type: ignore[no-untyped-def]
    with atomic_transaction() as session:
        ref = make_reference(session, rate=D("80"))
        if session.scalar(select(FiatCurrency.id).where(FiatCurrency.code == "KZT")) is None:
            ref.fiat.code = "KZT"  # a real currency, so the page shows its sign (₸)
        shop = make_store(session, ref, balance=D("1000"), require_payer_receipt=True)
        shop.store.store_name = "Demo Coffee"
        trader = make_trader(session, ref, deposit=D("100000"))
        make_requisite(session, trader, ref, number=CARD)
        set_config_value(session, "RATE_LIMIT_DEFAULT", "100000/minute")
        token = create_access_token(trader.user_id, Role.TRADER)
        fiat = ref.fiat.code
    return shop, fiat, {"Authorization": f"Bearer {token}"}


def _create_payin(gateway_url: str, shop, fiat: str, key: str) -> str:  # type: ignore[no-untyped-def]
    path = "/gateway/payin/init"
    payload = {
        "merchant_order_id": key,
        "amount_fiat": "4000.00",
        "fiat_currency": fiat,
        "return_url": f"{gateway_url}/pay/back-to-shop-{key}",
    }
    body = json.dumps(payload).encode()
    r = httpx.post(
        gateway_url + path,
        content=body,
        headers=gateway_headers(shop, "POST", path, body, idempotency_key=key),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["order_id"])


def _check(page, artifacts: Path, axe: Path, state: str, lang: str) -> None:  # type: ignore[no-untyped-def]
    """At both sizes: a screenshot, and axe-core finds no serious or critical violation."""
    for width, height in VIEWPORTS:
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(
            path=str(artifacts / f"{state}-{lang}-{width}x{height}.png"), full_page=True
        )
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            page.add_script_tag(path=str(axe))
        violations = page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
                .filter(v => ['serious', 'critical'].includes(v.impact))
                .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"""
        )
        assert violations == [], f"{state}/{lang}/{width}x{height}: {violations}"
    page.set_viewport_size({"width": 360, "height": 740})


def _heading(page) -> str:  # type: ignore[no-untyped-def]
    return str(page.locator("main h1").inner_text()).strip()


def test_payin_walks_every_state_by_itself(  # type: ignore[no-untyped-def]
    browser, axe_script, artifacts, world, gateway_url, celery_worker
) -> None:
    shop, fiat, trader_auth = world
    orders = {
        lang: _create_payin(gateway_url, shop, fiat, f"walk-{lang}") for lang in ("ru", "en", "kk")
    }
    expiring = _create_payin(gateway_url, shop, fiat, "walk-expire")
    pages = {}
    for lang, order_id in orders.items():
        # ru and kk come from Accept-Language; en through the page's own language switcher.
        context = browser.new_context(
            locale="ru-RU" if lang == "en" else {"ru": "ru-RU", "kk": "kk-KZ"}[lang],
            viewport={"width": 360, "height": 740},
            permissions=["clipboard-read", "clipboard-write"],
            bypass_csp=True,  # lets the test inject axe-core; the CSP itself is checked below
        )
        page = context.new_page()
        response = page.goto(f"{gateway_url}/pay/{order_id}")
        assert response.status == 200
        if lang == "en":
            page.get_by_role("link", name="English").click()
            page.wait_for_url(f"**/pay/{order_id}?lang=en")
        assert page.locator("html").get_attribute("lang") == lang
        assert _heading(page) == HEADINGS["looking"][lang]
        assert CARD not in page.content()
        _check(page, artifacts, axe_script, "looking", lang)
        pages[lang] = page

    celery_worker(concurrency=1)  # only now may the orders be assigned: the pages must follow
    for lang, page in pages.items():
        order_id = orders[lang]
        page.locator("main h1", has_text=PENDING_HEADING[lang]).wait_for(timeout=LIVE)
        assert page.locator("#number").inner_text() == "2200 7000 1111 2222"
        assert "Demo Coffee" in page.locator(".store").inner_text()
        assert "4" in page.locator("#amount").inner_text()
        page.locator(".countdown-value").filter(has_text=":").wait_for()
        _check(page, artifacts, axe_script, "pending", lang)

        page.locator("button.copy").nth(0).click()
        assert page.evaluate("() => navigator.clipboard.readText()") == "4000.00"
        page.locator("button.copy").nth(1).click()
        assert page.evaluate("() => navigator.clipboard.readText()") == CARD

        # Required receipt: "I have paid" without one is refused on the page, nothing sent.
        page.locator("#confirm").click()
        assert page.locator("#confirm-error").inner_text() != ""
        page.locator("#receipt").set_input_files(
            {"name": "receipt.png", "mimeType": "image/png", "buffer": PNG}
        )
        page.locator("#confirm").click()
        page.locator("main h1", has_text=HEADINGS["paid"][lang]).wait_for(timeout=LIVE)
        assert CARD not in page.content()
        _check(page, artifacts, axe_script, "paid", lang)

        from jivapay.servers.trader.server import app as trader_app

        with TestClient(trader_app) as trader_api:
            r = trader_api.post(f"/trader/orders/{order_id}/confirm", headers=trader_auth)
            assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        page.locator("main h1", has_text=HEADINGS["completed"][lang]).wait_for(timeout=LIVE)
        assert (
            page.locator("a.back").get_attribute("href")
            == f"{gateway_url}/pay/back-to-shop-walk-{lang}"
        )
        _check(page, artifacts, axe_script, "completed", lang)
        page.wait_for_url(f"{gateway_url}/pay/back-to-shop-walk-{lang}", timeout=30_000)
        page.context.close()

    # Expiry: the deadline passes, the scheduler's task (run by the worker) expires the order,
    # and the open page turns to the expiry message by itself.
    context = browser.new_context(locale="en-US", bypass_csp=True)
    page = context.new_page()
    page.goto(f"{gateway_url}/pay/{expiring}")
    page.locator("main h1", has_text=PENDING_HEADING["en"]).wait_for(timeout=LIVE)
    with atomic_transaction() as session:
        session.execute(
            update(OrderHistory)
            .where(OrderHistory.public_id == expiring)
            .values(expires_at=OrderHistory.created_at)
        )
    from jivapay.worker.app import celery_app

    celery_app.send_task("orders.expire_overdue")
    page.locator("main h1", has_text=HEADINGS["expired"]["en"]).wait_for(timeout=LIVE)
    assert CARD not in page.content()
    _check(page, artifacts, axe_script, "expired", "en")
    for lang in ("ru", "kk"):
        page.goto(f"{gateway_url}/pay/{expiring}?lang={lang}")
        assert _heading(page) == HEADINGS["expired"][lang]
        _check(page, artifacts, axe_script, "expired", lang)
    context.close()


def test_page_runs_under_its_own_csp_and_unknown_ids_look_alike(  # type: ignore[no-untyped-def]
    browser, world, gateway_url
) -> None:
    shop, fiat, _ = world
    order_id = _create_payin(gateway_url, shop, fiat, "csp")
    context = browser.new_context(locale="en-US")  # CSP enforced
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    response = page.goto(f"{gateway_url}/pay/{order_id}")
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    # The script ran under the CSP: it polls the status endpoint.
    with page.expect_response(lambda r: r.url.endswith(f"/pay/{order_id}/status")) as polled:
        pass
    assert polled.value.json() == {"status": "new", "closed": False, "time_up": False}
    assert not [e for e in errors if "Content Security Policy" in e]

    missing = page.goto(f"{gateway_url}/pay/ord_doesnotexist000000000000")
    missing_body = missing.text()
    malformed = page.goto(f"{gateway_url}/pay/%3Cscript%3E")
    assert missing.status == malformed.status == 404
    assert missing_body == malformed.text()
    context.close()
