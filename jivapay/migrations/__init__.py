"""Alembic migrations of the JivaPay schema."""
