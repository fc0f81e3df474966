"""The trader API server."""
