"""Routers of the teamlead server (`/teamlead`): the own team's traders, traffic, orders,
statistics, online requisites and deposits."""
