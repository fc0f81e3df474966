"""Reconciliation: checks every money invariant of docs/money.md and lists each discrepancy.

1. Every balance equals the sum of its history's `amount`, and every `frozen` the sum of its
   `frozen_delta` (store and trader deposits).
2. `0 <= frozen <= balance` on every held balance.
3. Every completed order moved exactly what its row says (docs/money.md, "One order"): one leg
   in each of the store balance, the trader deposit, the platform balance and the trader's fiat
   balance, each on the order's own account (its store, its trader, its currencies) with its
   operation, for the amount its `amount_crypto`, `store_commission`, `trader_commission`,
   `platform_profit` and `amount_fiat` fix; so its crypto legs sum to exactly zero. No other order
   (nor an intake that never became one) has any leg, crypto or fiat. One discrepancy per order.
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

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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

# Money moves for an order only when it completes, and exactly as the order row says
# (docs/money.md, "One order"): on a completed order one leg in each of the four ledgers, on the
# order's own account (store balance of its store, deposit and fiat balance of its trader, the
# platform balance, in its currencies) with its operation, for the amounts its row fixes; nothing
# on any other order (nor on an intake that never became one). One grouped pass over every order
# and every leg; the CASEs give, per ledger, the order's account and amount.
# Ledgers: 1 store balance, 2 trader deposit, 3 platform, 4 trader fiat (0 owns the platform).
_ORDER_LEGS = """
    WITH legs AS (
        SELECT h.incoming_order_id, 1 AS ledger, h.operation, h.amount, b.store_id AS owner_id,
               b.crypto_currency_id AS currency_id
        FROM balance_store_history h JOIN balance_stores b ON b.id = h.balance_store_id
        WHERE h.operation IN ('payin', 'payout')
        UNION ALL SELECT h.incoming_order_id, 2, h.operation, h.amount, b.trader_id,
               b.crypto_currency_id
        FROM balance_trader_crypto_history h JOIN balance_traders b ON b.id = h.balance_trader_id
        WHERE h.operation IN ('payin', 'payout')
        UNION ALL SELECT h.incoming_order_id, 3, h.operation, h.amount, 0, b.crypto_currency_id
        FROM balance_platform_history h JOIN balance_platform b ON b.id = h.balance_platform_id
        WHERE h.operation = 'commission'
        UNION ALL SELECT h.incoming_order_id, 4, h.operation, h.amount, b.trader_id,
               b.fiat_currency_id
        FROM balance_trader_fiat_history h
        JOIN balance_traders_fiat b ON b.id = h.balance_trader_fiat_id
        WHERE h.operation IN ('payin', 'payout')
    ), per_order AS (
        SELECT COALESCE(o.public_id, 'intake #' || l.incoming_order_id) AS subject, o.status,
               COALESCE(SUM(l.amount) FILTER (WHERE l.ledger < 4), 0) AS crypto_total,
               COUNT(l.ledger) FILTER (WHERE l.ledger < 4) AS crypto_legs,
               COUNT(l.ledger) FILTER (WHERE l.ledger = 4) AS fiat_legs,
               CASE o.order_type WHEN 'payin' THEN o.amount_crypto - o.store_commission
                                 ELSE -(o.amount_crypto + o.store_commission) END AS expected_1,
               SUM(l.amount) FILTER (WHERE l.ledger = 1 AND x.own) AS own_1,
               COUNT(l.ledger) FILTER (WHERE l.ledger = 1 AND NOT x.own) AS other_1,
               CASE o.order_type WHEN 'payin' THEN o.trader_commission - o.amount_crypto
                                 ELSE o.amount_crypto + o.trader_commission END AS expected_2,
               SUM(l.amount) FILTER (WHERE l.ledger = 2 AND x.own) AS own_2,
               COUNT(l.ledger) FILTER (WHERE l.ledger = 2 AND NOT x.own) AS other_2,
               o.platform_profit AS expected_3,
               SUM(l.amount) FILTER (WHERE l.ledger = 3 AND x.own) AS own_3,
               COUNT(l.ledger) FILTER (WHERE l.ledger = 3 AND NOT x.own) AS other_3,
               CASE o.order_type WHEN 'payin' THEN o.amount_fiat ELSE -o.amount_fiat END
                   AS expected_4,
               SUM(l.amount) FILTER (WHERE l.ledger = 4 AND x.own) AS own_4,
               COUNT(l.ledger) FILTER (WHERE l.ledger = 4 AND NOT x.own) AS other_4
        FROM order_history o FULL JOIN legs l ON l.incoming_order_id = o.incoming_order_id
        CROSS JOIN LATERAL (SELECT
            l.operation = CASE l.ledger WHEN 3 THEN 'commission' ELSE o.order_type END
            AND l.owner_id = CASE l.ledger WHEN 1 THEN o.store_id WHEN 3 THEN 0
                                           ELSE o.trader_id END
            AND l.currency_id = CASE l.ledger WHEN 4 THEN o.fiat_currency_id
                                              ELSE o.crypto_currency_id END AS own) x
        GROUP BY o.id, l.incoming_order_id
    )
    SELECT * FROM per_order
    WHERE (status IS DISTINCT FROM 'completed' AND crypto_legs + fiat_legs > 0)
       OR (status = 'completed' AND (
           crypto_legs + fiat_legs <> 4
           OR own_1 IS DISTINCT FROM expected_1 OR own_2 IS DISTINCT FROM expected_2
           OR own_3 IS DISTINCT FROM expected_3 OR own_4 IS DISTINCT FROM expected_4))
"""
_LEDGERS = ("store", "trader deposit", "platform", "trader fiat")

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
    for legs in session.execute(text(_ORDER_LEGS)):
        found.append(_order_legs_discrepancy(legs))
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


def _order_legs_discrepancy(row: Sequence[Any]) -> Discrepancy:
    """The one discrepancy of an order `_ORDER_LEGS` returned: money moved though it did not
    complete; else its crypto legs not summing to zero; else the first ledger whose leg differs
    from the order (the amount on the order's own account, and any leg on another account)."""
    subject, status, crypto_total, crypto_legs, fiat_legs = row[:5]
    if status != OrderStatus.COMPLETED.value:
        check = (
            f"no money moved for an order not completed ({status or 'no order'},"
            f" {crypto_legs} crypto + {fiat_legs} fiat legs)"
        )
        return Discrepancy(check, subject, Decimal(0), crypto_total)
    if crypto_total != 0 or crypto_legs != 3:
        check = f"legs of a completed order sum to 0 ({crypto_legs} crypto legs)"
        return Discrepancy(check, subject, Decimal(0), crypto_total)
    for i, ledger in enumerate(_LEDGERS):
        expected, own, others = row[5 + 3 * i : 8 + 3 * i]
        if own != expected or others:
            elsewhere = f" ({others} more on another account or operation)" if others else ""
            return Discrepancy(
                f"{ledger} leg of a completed order = the order{elsewhere}", subject, expected, own
            )
    return Discrepancy("legs of a completed order = the order", subject, None, None)
