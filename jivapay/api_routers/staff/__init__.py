"""Routers mounted on both staff servers (admin and support); the granted permission decides."""
