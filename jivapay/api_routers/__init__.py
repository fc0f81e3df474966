"""api_routers package."""
