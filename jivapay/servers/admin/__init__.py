"""The admin API server."""
