"""The trader's own routers (requisites, balances, profile, statistics)."""
