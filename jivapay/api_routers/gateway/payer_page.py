"""The hosted payment page `GET /pay/{order_id}`: amount, deadline and, while the
PayIn is open, the bank, method, full card number and holder to pay to, with a confirm button.

The public id in the URL is the capability, so the page is never cached, indexed or leaked in a
Referer header. The receipt is sent as multipart `receipt` with the confirmation.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from jivapay.api_routers.deps import DbSession
from jivapay.services import gateway_service
from jivapay.services.gateway_service import PayerPageView

payer_router = APIRouter(tags=["payer"])

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Payment {order_id}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}
dt{{color:#666;margin-top:.6rem}}dd{{margin:0;font-size:1.2rem}}.num{{font-family:monospace}}</style>
</head><body>
<h1>Pay {amount} {currency}</h1>
<p>Status: <strong id="status">{status}</strong></p>
{details}
</body></html>"""

_DETAILS = """<dl>
<dt>Bank</dt><dd>{bank}</dd>
<dt>Method</dt><dd>{method}</dd>
<dt>Card / account number</dt><dd class="num">{number}</dd>
<dt>Holder</dt><dd>{holder}</dd>
<dt>Pay before</dt><dd>{deadline}</dd>
</dl>
<p><label>Receipt (JPEG, PNG or PDF)
<input type="file" id="receipt" accept="image/jpeg,image/png,application/pdf"></label></p>
<button id="confirm">I have paid</button>
<script>
document.getElementById("confirm").onclick = async () => {{
  const form = new FormData();
  const file = document.getElementById("receipt").files[0];
  if (file) form.append("receipt", file);
  const r = await fetch("/gateway/payin/confirm/{order_id}", {{method: "POST", body: form}});
  const body = await r.json();
  document.getElementById("status").textContent = body.status || body.detail || r.status;
}};
</script>"""


def render(view: PayerPageView) -> str:
    """The page's HTML; every value is escaped."""
    details = ""
    if view.requisite is not None and view.status == "pending":
        details = _DETAILS.format(
            bank=escape(view.requisite.bank.name),
            method=escape(view.requisite.payment_method.name),
            number=escape(view.requisite.number),
            holder=escape(view.requisite.holder_name),
            deadline=escape(view.expires_at.isoformat() if view.expires_at else ""),
            order_id=escape(view.order_id),
        )
    elif view.status in ("new", "retrying", "manual_review"):
        details = "<p>Payment details are being prepared. Refresh this page in a moment.</p>"
    if view.return_url:
        details += f'<p><a href="{escape(view.return_url)}">Back to the shop</a></p>'
    return _PAGE.format(
        order_id=escape(view.order_id),
        amount=escape(format(view.amount_fiat, "f")),
        currency=escape(view.fiat_currency),
        status=escape(view.status),
        details=details,
    )


@payer_router.get("/pay/{order_id}", response_class=HTMLResponse, include_in_schema=True)
def payer_page(session: DbSession, order_id: str) -> HTMLResponse:
    view = gateway_service.get_payer_view(session, public_id=order_id)
    return HTMLResponse(render(view), headers=_HEADERS)
