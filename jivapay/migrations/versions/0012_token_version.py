"""A user's token version: every access token carries the version current when it was issued, and
a password change, an administrator's reset, a reset from the CLI, a deactivation or an erasure
raises it, so the tokens issued before stop at once (not only at their expiry).

A column with a constant default: PostgreSQL adds it without rewriting `users`.

Revision ID: 0012_token_version
Revises: 0011_leaner_indexes
Create Date: 2026-12-07 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_token_version"
down_revision: str | None = "0011_leaner_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("users", "token_version")
