"""The routers every staff server (admin and support) serves, in mounting order: one list, so both
servers offer the same routes and the caller's grants decide."""

from __future__ import annotations

from fastapi import APIRouter

from jivapay.api_routers.staff import (
    balances,
    callbacks,
    disputes,
    fraud_lists,
    intake,
    merchants,
    mounted,
    online_stats,
    orders,
    requisites,
    stores,
    traders,
)
from jivapay.enums import Role


def staff_routers(role: Role) -> list[APIRouter]:
    """The shared staff routers of `role`'s server, each under `/{role}`."""
    return [
        # First: its literal path must win over `/requisites/{id}`.
        online_stats.router_for(role),
        requisites.router_for(role),
        traders.router_for(role),
        mounted(role, stores.router),
        mounted(role, orders.router),
        mounted(role, intake.router),
        mounted(role, disputes.router),
        mounted(role, balances.router),
        mounted(role, fraud_lists.router),
        mounted(role, callbacks.router),
        mounted(role, merchants.router),
    ]
