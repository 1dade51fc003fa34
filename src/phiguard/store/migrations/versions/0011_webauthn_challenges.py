"""Pending WebAuthn challenges, shared by every server process.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webauthn_challenges",
        sa.Column("handle", sa.String(64), nullable=False),
        sa.Column("ceremony", sa.String(16), nullable=False),
        sa.Column("challenge", sa.LargeBinary(128), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("handle", "ceremony"),
    )
    op.create_index("ix_webauthn_challenges_expiry", "webauthn_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_webauthn_challenges_expiry", table_name="webauthn_challenges")
    op.drop_table("webauthn_challenges")
