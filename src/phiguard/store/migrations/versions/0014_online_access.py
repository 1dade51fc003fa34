"""SMART online_access: codes and refresh tokens remember the console session.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("oauth_codes", "oauth_refresh_tokens"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("session_handle", sa.String(64), nullable=True))


def downgrade() -> None:
    for table in ("oauth_codes", "oauth_refresh_tokens"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("session_handle")
