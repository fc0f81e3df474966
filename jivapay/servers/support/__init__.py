"""The support API server."""
