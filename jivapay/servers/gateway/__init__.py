"""The gateway API server."""
