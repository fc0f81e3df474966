"""The merchant API's routers (`/merchant`): stores and keys, orders, balances, statistics and
callbacks of the merchant's own stores. Listed in `servers/merchant/server.py` ROUTERS."""
