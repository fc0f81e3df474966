"""The teamlead API server."""
