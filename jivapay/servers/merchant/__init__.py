"""The merchant API server."""
