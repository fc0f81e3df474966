"""The payer's page over HTTP: language choice, what each state reveals, the live status endpoint,
the payment deadline (before the scheduler expires the order), identical 404s, security headers
and the cross-site guard of the payer's confirm."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jivapay.api_routers.gateway import payer_i18n
from jivapay.database.base import utcnow
from jivapay.database.models import AuditLog, CallbackDelivery, OrderHistory, UploadedDocument
from tests.api.test_gateway_actions import CARD, _call, _create, _process, client, world
from tests.sample_files import png_bytes

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
    assert client.get(f"/pay/{order_id}/status").json() == {
        "status": "new",
        "closed": False,
        "time_up": False,
    }

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
    assert client.get(f"/pay/{order_id}/status").json() == {
        "status": "paid",
        "closed": False,
        "time_up": False,
    }


def _deadline_in(db: Session, order_id: str, delta: timedelta) -> None:
    """Move the order's payment deadline to now + `delta`; the scheduler does not run here."""
    db.execute(
        update(OrderHistory)
        .where(OrderHistory.public_id == order_id)
        .values(expires_at=utcnow() + delta)
    )
    db.commit()


def _written(db: Session, order_id: str) -> tuple[object, ...]:
    """What a transition of the order would change: its row and its audit, callback, files."""
    db.expire_all()
    order = db.scalars(select(OrderHistory).where(OrderHistory.public_id == order_id)).one()
    count = func.count()
    return (
        order.status,
        order.updated_at,
        order.paid_at,
        db.scalar(select(count).select_from(AuditLog).where(AuditLog.target_id == order_id)),
        db.scalar(select(count).where(CallbackDelivery.order_id == order.id)),
        db.scalar(select(count).where(UploadedDocument.order_id == order.id)),
    )


def test_past_the_payment_deadline_the_page_hides_the_number_and_says_time_is_up(
    db: Session, client: TestClient, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    order_id = _create(client, store, ref)
    _process(db, order_id)
    _deadline_in(db, order_id, -timedelta(minutes=10))  # the sweeper has not expired it yet

    page = client.get(f"/pay/{order_id}?lang=en")
    assert page.status_code == 200
    assert CARD not in page.text and "2200 1234 5678 9012" not in page.text
    assert "Ivanova Anna" not in page.text and 'id="confirm-form"' not in page.text
    assert "Time is up" in page.text and "Do not send money for it" in page.text
    assert 'data-status="pending"' in page.text and 'data-time-up="true"' in page.text
    assert client.get(f"/pay/{order_id}/status").json() == {
        "status": "pending",
        "closed": False,  # the page keeps polling: the sweeper's `expired` (or a late confirm)
        "time_up": True,
    }
    # The store's host-to-host status stops giving the requisite too; the status stays the truth.
    status = _call(client, store, "GET", f"/gateway/payin/status/{order_id}").json()
    assert (status["status"], status["requisite"]) == ("pending", None)


def test_past_the_payment_deadline_the_payer_cannot_confirm_and_nothing_is_written(
    db: Session, client: TestClient, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    order_id = _create(client, store, ref)
    _process(db, order_id)
    _deadline_in(db, order_id, -timedelta(minutes=10))
    before = _written(db, order_id)
    url = f"/gateway/payin/confirm/{order_id}"

    response = client.post(url, headers={"Sec-Fetch-Site": "same-origin"})

    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "invalid_status_transition"
    assert problem["current_status"] == "pending" and "time to pay" in problem["detail"]
    assert _written(db, order_id) == before
    assert before[0] == "pending"
    # With a receipt too: refused before the file goes anywhere (no storage is configured here).
    receipt = {"receipt": ("receipt.png", png_bytes(), "image/png")}
    with_receipt = client.post(url, headers={"Sec-Fetch-Site": "same-origin"}, files=receipt)
    assert with_receipt.status_code == 409, with_receipt.text
    assert _written(db, order_id) == before


def test_just_before_the_payment_deadline_the_page_and_the_confirm_still_work(
    db: Session, client: TestClient, world
) -> None:  # type: ignore[no-untyped-def]
    ref, store, _ = world
    order_id = _create(client, store, ref)
    _process(db, order_id)
    _deadline_in(db, order_id, timedelta(seconds=30))

    page = client.get(f"/pay/{order_id}?lang=en")
    assert "Send exactly this amount" in page.text and "2200 1234 5678 9012" in page.text
    assert 'id="confirm-form"' in page.text and 'data-time-up="false"' in page.text
    assert client.get(f"/pay/{order_id}/status").json()["time_up"] is False
    status = _call(client, store, "GET", f"/gateway/payin/status/{order_id}").json()
    assert status["requisite"]["number"] == CARD
    confirmed = client.post(
        f"/gateway/payin/confirm/{order_id}", headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "paid"


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
    # Its error answers too: a malformed query, an unknown order's status.
    for error in (
        client.get("/pay/ord_missing?lang=far-too-long-a-language"),
        client.get("/pay/ord_missing/status"),
    ):
        assert error.status_code in (404, 422)
        assert error.headers["content-security-policy"] == csp
        assert error.headers["x-robots-tag"] == "noindex, nofollow"
    assert "<script>" not in page.text and not re.search(r"\son[a-z]+=", page.text)
    script = client.get("/pay/assets/pay.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    assert client.get("/pay/assets/../../config.py").status_code == 404
    assert client.get("/pay/assets/other.js").status_code == 404
