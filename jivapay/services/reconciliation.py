"""Reconciliation: checks every money invariant of docs/money.md and lists each discrepancy.

1. Every balance equals the sum of its history's `amount`, and every `frozen` the sum of its
   `frozen_delta` (store and trader deposits).
2. `0 <= frozen <= balance` on every held balance.
3. The crypto legs of every completed order sum to exactly zero, and no other order (nor an
   intake that never became one) has any.
4. Per crypto currency, all crypto balances together equal deposits - withdrawals + adjustments.
5. What is frozen equals what open orders hold: a store's frozen amount is the sum of its open
   PayOuts' holds, a trader's the sum of their open PayIns' holds (a hold on an account without a
   balance row is frozen nowhere, and reported).
6. The order statistics rollup equals a fresh aggregation of `order_history`
   (`order_stats_rollup.drift`: one grouped scan of the orders, cheaper than check 1's scans of
   every balance history, so it runs with them).

Read-only; `jivapay reconcile` prints the result and exits 1 when anything is off, the tests run it
after every concurrent scenario, and the scheduler reports any discrepancy as a critical error.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from jivapay.enums import OrderStatus
from jivapay.services import order_stats_rollup


@dataclass(frozen=True)
class Discrepancy:
    check: str
    subject: str
    expected: Decimal | None
    actual: Decimal | None

    def __str__(self) -> str:
        return f"{self.check}: {self.subject} expected {self.expected} got {self.actual}"


_SUM_CHECKS = {
    "store balance = sum of history": """
        SELECT b.id, b.balance, b.frozen, COALESCE(SUM(h.amount), 0), COALESCE(SUM(h.frozen_delta), 0)
        FROM balance_stores b LEFT JOIN balance_store_history h ON h.balance_store_id = b.id
        GROUP BY b.id""",
    "trader deposit = sum of history": """
        SELECT b.id, b.balance, b.frozen, COALESCE(SUM(h.amount), 0), COALESCE(SUM(h.frozen_delta), 0)
        FROM balance_traders b LEFT JOIN balance_trader_crypto_history h ON h.balance_trader_id = b.id
        GROUP BY b.id""",
    "platform balance = sum of history": """
        SELECT b.id, b.balance, 0, COALESCE(SUM(h.amount), 0), 0
        FROM balance_platform b LEFT JOIN balance_platform_history h ON h.balance_platform_id = b.id
        GROUP BY b.id""",
    "trader fiat = sum of history": """
        SELECT b.id, b.balance, 0, COALESCE(SUM(h.amount), 0), 0
        FROM balance_traders_fiat b
        LEFT JOIN balance_trader_fiat_history h ON h.balance_trader_fiat_id = b.id
        GROUP BY b.id""",
}

_FROZEN_RANGE = """
    SELECT 'store', id, balance, frozen FROM balance_stores WHERE frozen < 0 OR frozen > balance
    UNION ALL
    SELECT 'trader', id, balance, frozen FROM balance_traders WHERE frozen < 0 OR frozen > balance
"""

# Money moves for an order only when it completes: three legs summing to zero on a completed
# order, none on any other (and none for an intake that never became an order).
_ORDER_LEGS = """
    WITH legs AS (
        SELECT incoming_order_id, amount FROM balance_store_history
            WHERE operation IN ('payin', 'payout')
        UNION ALL SELECT incoming_order_id, amount FROM balance_trader_crypto_history
            WHERE operation IN ('payin', 'payout')
        UNION ALL SELECT incoming_order_id, amount FROM balance_platform_history
            WHERE operation = 'commission'
    ), per_order AS (
        SELECT incoming_order_id, SUM(amount) AS total, COUNT(*) AS n FROM legs
        GROUP BY incoming_order_id
    )
    SELECT COALESCE(o.public_id, 'intake #' || p.incoming_order_id), o.status,
           COALESCE(p.total, 0), COALESCE(p.n, 0)
    FROM order_history o FULL JOIN per_order p ON p.incoming_order_id = o.incoming_order_id
    WHERE (o.status = 'completed' AND (COALESCE(p.total, 0) <> 0 OR COALESCE(p.n, 0) <> 3))
       OR (o.status IS DISTINCT FROM 'completed' AND p.n > 0)
"""

_TOTALS_PER_CURRENCY = """
    WITH balances AS (
        SELECT crypto_currency_id AS cid, balance FROM balance_stores
        UNION ALL SELECT crypto_currency_id, balance FROM balance_traders
        UNION ALL SELECT crypto_currency_id, balance FROM balance_platform
    ), external AS (
        SELECT b.crypto_currency_id AS cid, h.amount FROM balance_store_history h
            JOIN balance_stores b ON b.id = h.balance_store_id
            WHERE h.operation IN ('deposit', 'withdrawal', 'adjustment')
        UNION ALL SELECT b.crypto_currency_id, h.amount FROM balance_trader_crypto_history h
            JOIN balance_traders b ON b.id = h.balance_trader_id
            WHERE h.operation IN ('deposit', 'withdrawal', 'adjustment')
        UNION ALL SELECT b.crypto_currency_id, h.amount FROM balance_platform_history h
            JOIN balance_platform b ON b.id = h.balance_platform_id
            WHERE h.operation IN ('deposit', 'withdrawal', 'adjustment')
    ), ids AS (SELECT cid FROM balances UNION SELECT cid FROM external)
    SELECT c.code,
           COALESCE((SELECT SUM(balance) FROM balances b WHERE b.cid = ids.cid), 0),
           COALESCE((SELECT SUM(amount) FROM external e WHERE e.cid = ids.cid), 0)
    FROM ids JOIN crypto_currencies c ON c.id = ids.cid
"""

# Holds of open orders: PayOuts hold the store from intake until they close (still at intake or
# assigned and open); PayIns hold the trader from assignment until they close.
# Full joins: a hold on an account that has no balance row is frozen nowhere.
_STORE_HOLDS = """
    WITH open_holds AS (
        SELECT i.store_id, i.crypto_currency_id AS cid, SUM(i.store_hold) AS hold
        FROM incoming_orders i
        LEFT JOIN order_history o ON o.incoming_order_id = i.id
        WHERE i.order_type = 'payout' AND (
            (o.id IS NULL AND i.status IN ('new', 'retrying', 'manual_review'))
            OR o.status IN ('pending', 'paid', 'disputed'))
        GROUP BY i.store_id, i.crypto_currency_id
    )
    SELECT COALESCE('balance #' || b.id, 'store ' || h.store_id || ' (no balance row)'),
           COALESCE(b.frozen, 0), COALESCE(h.hold, 0)
    FROM balance_stores b
    FULL JOIN open_holds h ON h.store_id = b.store_id AND h.cid = b.crypto_currency_id
    WHERE COALESCE(b.frozen, 0) <> COALESCE(h.hold, 0)
"""
_TRADER_HOLDS = """
    WITH open_holds AS (
        SELECT trader_id, crypto_currency_id AS cid, SUM(hold_amount) AS hold
        FROM order_history
        WHERE order_type = 'payin' AND status IN ('pending', 'paid', 'disputed')
        GROUP BY trader_id, crypto_currency_id
    )
    SELECT COALESCE('balance #' || b.id, 'trader ' || h.trader_id || ' (no balance row)'),
           COALESCE(b.frozen, 0), COALESCE(h.hold, 0)
    FROM balance_traders b
    FULL JOIN open_holds h ON h.trader_id = b.trader_id AND h.cid = b.crypto_currency_id
    WHERE COALESCE(b.frozen, 0) <> COALESCE(h.hold, 0)
"""


def reconcile(session: Session) -> list[Discrepancy]:
    """Every discrepancy between balances, history and open orders (empty when all is well)."""
    found: list[Discrepancy] = []
    for check, sql in _SUM_CHECKS.items():
        for bid, balance, frozen, total, frozen_total in session.execute(text(sql)):
            if balance != total:
                found.append(Discrepancy(check, f"balance #{bid}", total, balance))
            if frozen != frozen_total:
                found.append(
                    Discrepancy(check + " (frozen)", f"balance #{bid}", frozen_total, frozen)
                )
    for kind, bid, balance, frozen in session.execute(text(_FROZEN_RANGE)):
        found.append(
            Discrepancy("0 <= frozen <= balance", f"{kind} balance #{bid}", balance, frozen)
        )
    for subject, status, total, count in session.execute(text(_ORDER_LEGS)):
        check = (
            f"legs of a completed order sum to 0 ({count} legs)"
            if status == OrderStatus.COMPLETED.value
            else f"no money moved for an order not completed ({status or 'no order'}, {count} legs)"
        )
        found.append(Discrepancy(check, subject, Decimal(0), total))
    for code, balances, external in session.execute(text(_TOTALS_PER_CURRENCY)):
        if balances != external:
            found.append(
                Discrepancy(
                    "sum of balances = deposits - withdrawals + adjustments",
                    code,
                    external,
                    balances,
                )
            )
    for subject, frozen, holds in session.execute(text(_STORE_HOLDS)):
        found.append(Discrepancy("store frozen = open PayOut holds", subject, holds, frozen))
    for subject, frozen, holds in session.execute(text(_TRADER_HOLDS)):
        found.append(Discrepancy("trader frozen = open PayIn holds", subject, holds, frozen))
    for row in order_stats_rollup.drift(session):
        for measure, expected in row.expected.items():
            if expected != row.actual[measure]:
                subject = ", ".join(f"{k}={v}" for k, v in row.key.items())
                found.append(
                    Discrepancy(
                        f"{row.table}.{measure} = aggregation of order_history",
                        subject,
                        expected,
                        row.actual[measure],
                    )
                )
    return found
