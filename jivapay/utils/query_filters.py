"""What each caller may see, decided in one place and applied inside services.

A router mounted on the wrong server still cannot leak another owner's data: every listing and
lookup of orders goes through `orders_visible_to`, which scopes the query to the caller.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, false, select, true

from jivapay.database.models import (
    IncomingOrder,
    MerchantStore,
    OrderHistory,
    OrderStatsStore,
    ReqTrader,
    Trader,
)
from jivapay.enums import Role
from jivapay.permissions import Permission, check_permission, match_permission, resolve_required
from jivapay.security import Principal

_ONE_STORE = str(Permission.ORDERS_VIEW_STORE)


def orders_visible_to(
    principal: Principal, of: type[OrderHistory] | type[OrderStatsStore] = OrderHistory
) -> ColumnElement[bool]:
    """A WHERE clause limiting `order_history` (or the merchant view of its statistics rollup,
    `of=OrderStatsStore`, which has the same owner columns) to the orders `principal` may see."""
    if principal.role == Role.TRADER:
        return of.trader_id == principal.profile_id if of is OrderHistory else false()
    if principal.role == Role.MERCHANT:
        return of.merchant_id == principal.profile_id
    if principal.role == Role.TEAMLEAD:
        if not check_permission(principal, Permission.ORDERS_VIEW_TEAM):
            return false()
        team = (
            Trader.__table__.select()
            .with_only_columns(Trader.id)
            .where(Trader.team_lead_id == principal.profile_id)
        )
        return of.trader_id.in_(team) if of is OrderHistory else false()
    if check_permission(principal, Permission.ORDERS_VIEW_ALL):
        return true()
    return _granted_stores(principal, of.store_id)


def granted_store_ids(principal: Principal) -> frozenset[int] | None:
    """The stores whose orders `orders:view:store:{id}` grants (`None`: every store).

    A grant naming a store id (`orders:view:store:7`) adds that store; one whose last segment is
    `*` (`orders:view:store:*`) covers every store.
    """
    store_ids: set[int] = set()
    for grant in principal.permissions:
        last = grant.rsplit(":", 1)[-1]
        if last == "*" and match_permission(grant, resolve_required(_ONE_STORE, 0)):
            return None
        if (
            last.isascii()
            and last.isdigit()
            and match_permission(grant, resolve_required(_ONE_STORE, last))
        ):
            store_ids.add(int(last))
    return frozenset(store_ids)


def _granted_stores(principal: Principal, store_column: Any) -> ColumnElement[bool]:
    store_ids = granted_store_ids(principal)
    if store_ids is None:
        return true()
    if not store_ids:
        return false()
    return store_column.in_(sorted(store_ids))


def stores_visible_to(principal: Principal) -> ColumnElement[bool]:
    """A WHERE clause limiting `merchant_stores` to those `principal` may see."""
    if principal.role == Role.MERCHANT:
        return MerchantStore.merchant_id == principal.profile_id
    if check_permission(principal, Permission.STORES_VIEW_ALL):
        return true()
    return false()


def incoming_orders_visible_to(principal: Principal) -> ColumnElement[bool]:
    """A WHERE clause limiting `incoming_orders` (the intake record of every order, assigned or not)
    to those `principal` may see: a merchant its own stores' orders, staff by grant."""
    if principal.role == Role.MERCHANT:
        own_stores = select(MerchantStore.id).where(
            MerchantStore.merchant_id == principal.profile_id
        )
        return IncomingOrder.store_id.in_(own_stores)
    if check_permission(principal, Permission.ORDERS_VIEW_ALL) or check_permission(
        principal, Permission.INCOMING_ORDERS_VIEW_ALL
    ):
        return true()
    return false()


def traders_visible_to(principal: Principal) -> ColumnElement[bool]:
    """A WHERE clause limiting `traders` to those `principal` may see."""
    if principal.role == Role.TRADER:
        return Trader.id == principal.profile_id
    if principal.role == Role.TEAMLEAD:
        if check_permission(principal, Permission.TRADERS_VIEW_TEAM):
            return Trader.team_lead_id == principal.profile_id
        return false()
    if principal.role in (Role.ADMIN, Role.SUPPORT) and any(
        check_permission(principal, p)
        for p in (
            Permission.TRADERS_VIEW_ALL,
            Permission.TRADERS_EDIT_ALL,
            Permission.TRADERS_TRAFFIC_ALL,
        )
    ):
        return true()
    return false()


def requisites_visible_to(principal: Principal) -> ColumnElement[bool]:
    """A WHERE clause limiting `req_traders` to those `principal` may see."""
    if principal.role == Role.TRADER:
        return ReqTrader.trader_id == principal.profile_id
    if principal.role == Role.TEAMLEAD:
        if check_permission(principal, Permission.REQUISITES_VIEW_TEAM):
            team = (
                Trader.__table__.select()
                .with_only_columns(Trader.id)
                .where(Trader.team_lead_id == principal.profile_id)
            )
            return ReqTrader.trader_id.in_(team)
        return false()
    if principal.role in (Role.ADMIN, Role.SUPPORT) and any(
        check_permission(principal, p)
        for p in (
            Permission.REQUISITES_VIEW_ALL,
            Permission.REQUISITES_MODERATE_ALL,
            Permission.REQUISITES_EDIT_ALL,
        )
    ):
        return true()
    return false()


def trader_balances_visible_to(principal: Principal) -> ColumnElement[bool]:
    """A WHERE clause over `traders` limiting whose deposits `principal` may see."""
    if principal.role == Role.TRADER:
        return Trader.id == principal.profile_id
    if principal.role == Role.TEAMLEAD:
        if not check_permission(principal, Permission.BALANCES_VIEW_TEAM):
            return false()
        return Trader.team_lead_id == principal.profile_id
    if check_permission(principal, Permission.BALANCES_VIEW_ALL):
        return true()
    return false()
