"""Workforce accounts and per-account credential revocation.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("practitioner_id", sa.String(64), nullable=True),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("department", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("password_changed_at", sa.BigInteger, nullable=False),
        sa.Column("mfa_required", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("suspended_at", sa.BigInteger, nullable=True),
        sa.Column("terminated_at", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_users_tenant_status", "users", ["tenant", "status"])
    op.create_index("ix_users_practitioner", "users", ["tenant", "practitioner_id"])
    op.create_table(
        "revocations",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("revoked_before", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revocations")
    op.drop_index("ix_users_practitioner", table_name="users")
    op.drop_index("ix_users_tenant_status", table_name="users")
    op.drop_table("users")
