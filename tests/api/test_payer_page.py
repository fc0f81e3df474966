"""The payer's page over HTTP: language choice, what each state reveals, the live status endpoint,
identical 404s, security headers and the cross-site guard of the payer's confirm."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway import payer_i18n
from tests.api.test_gateway_actions import CARD, _create, _process, client, world

__all__ = ["client", "world"]


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        (None, "kk-KZ,kk;q=0.9,ru;q=0.8", "kk"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "de-DE, fr;q=0.5", "ru"),
        (None, None, "ru"),
        ("en", "kk", "en"),
        ("xx", "kk;q=0.1, en;q=0.9", "en"),
    ],
)
def test_language_comes_from_the_switcher_then_accept_language(
    query: str | None, accept: str | None, expected: str
) -> None:
    assert payer_i18n.choose_language(query, accept) == expected


def test_amount_and_number_are_formatted_per_locale() -> None:
    from decimal import Decimal

    assert payer_i18n.money(Decimal("4000.00"), "KZT", "kk") == "4\xa0000,00\xa0₸"
    assert payer_i18n.money(Decimal("1234.50"), "USD", "en") == "$1,234.50"
    assert payer_i18n.group_number("2200123456789012") == "2200 1234 5678 9012"


def test_states_reveal_the_number_only_while_pending(
    db: Session, client: TestClient, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    order_id = _create(client, store, ref)
    looking = client.get(f"/pay/{order_id}", headers={"Accept-Language": "kk"})
    assert looking.status_code == 200 and 'lang="kk"' in looking.text
    assert "Алушыны іздеудеміз" in looking.text and CARD not in looking.text
    assert client.get(f"/pay/{order_id}/status").json() == {"status": "new", "closed": False}

    _process(db, order_id)
    pending = client.get(f"/pay/{order_id}?lang=en")
    assert "Send exactly this amount" in pending.text and "2200 1234 5678 9012" in pending.text
    assert pending.headers["content-language"] == "en"

    confirmed = client.post(
        f"/gateway/payin/confirm/{order_id}", headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "paid"
    paid = client.get(f"/pay/{order_id}?lang=ru")
    assert "Оплата отмечена" in paid.text and CARD not in paid.text
    assert client.get(f"/pay/{order_id}/status").json() == {"status": "paid", "closed": False}


def test_cross_site_confirm_is_refused_and_changes_nothing(
    db: Session, client: TestClient, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    order_id = _create(client, store, ref)
    _process(db, order_id)
    url = f"/gateway/payin/confirm/{order_id}"
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
    ):
        refused = client.post(url, headers=headers)
        assert refused.status_code == 403, headers
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/pay/{order_id}/status").json()["status"] == "pending"
    same_origin = client.post(url, headers={"Origin": "http://testserver"})
    assert same_origin.status_code == 200 and same_origin.json()["status"] == "paid"


def test_unknown_malformed_and_payout_ids_answer_the_same_404(
    db: Session, client: TestClient, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    payout_id = _create(client, store, ref, kind="payout")
    bodies = set()
    for order_id in ("ord_" + "x" * 24, "<script>", "a" * 300, payout_id):
        page = client.get(f"/pay/{order_id}", headers={"Accept-Language": "en"})
        assert page.status_code == 404 and page.headers["cache-control"] == "no-store"
        bodies.add(page.text)
        assert client.get(f"/pay/{order_id}/status").status_code == 404
    assert len(bodies) == 1 and "Payment link not found" in bodies.pop()


def test_page_headers_and_assets(db: Session, client: TestClient, world) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    page = client.get(f"/pay/{_create(client, store, ref)}")
    csp = page.headers["content-security-policy"]
    assert (
        "script-src 'self'" in csp
        and "unsafe-inline" not in csp
        and "frame-ancestors 'none'" in csp
    )
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and not re.search(r"\son[a-z]+=", page.text)
    script = client.get("/pay/assets/pay.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    assert client.get("/pay/assets/../../config.py").status_code == 404
    assert client.get("/pay/assets/other.js").status_code == 404
