"""Access: the relationship index, break-the-glass grants and policy history.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_facts",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.LargeBinary(16), nullable=False),
        sa.Column("change_tag", sa.BigInteger, nullable=False),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "patient_key"),
    )
    op.create_table(
        "access_practitioner_roles",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("role_id", sa.String(64), nullable=False),
        sa.Column("practitioner_id", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "role_id"),
    )
    op.create_index(
        "ix_access_practitioner_roles",
        "access_practitioner_roles",
        ["tenant", "practitioner_id"],
    )
    op.create_table(
        "access_break_glass",
        sa.Column("grant_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("declared_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("reason_dek_version", sa.Integer, nullable=False),
        sa.Column("reason", sa.LargeBinary, nullable=False),
        sa.Column("review_status", sa.String(16), nullable=False),
        sa.Column("reviewed_by", sa.String(64), nullable=True),
        sa.Column("reviewed_at", sa.BigInteger, nullable=True),
        sa.Column("note_dek_version", sa.Integer, nullable=True),
        sa.Column("note", sa.LargeBinary, nullable=True),
    )
    op.create_index(
        "ix_access_break_glass_user", "access_break_glass", ["tenant", "user_id", "expires_at"]
    )
    op.create_index(
        "ix_access_break_glass_review", "access_break_glass", ["tenant", "review_status"]
    )
    op.create_table(
        "access_policy_sets",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bundle", sa.Text, nullable=False),
        sa.Column("installed_at", sa.BigInteger, nullable=False),
        sa.Column("installed_by", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "generation"),
    )


def downgrade() -> None:
    for name in (
        "access_policy_sets",
        "access_break_glass",
        "access_practitioner_roles",
        "access_facts",
    ):
        op.drop_table(name)
