"""Per-address log-in budgets, shared by every server process.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "address_throttle",
        sa.Column("address_key", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_address_throttle_updated", "address_throttle", ["updated"])


def downgrade() -> None:
    op.drop_index("ix_address_throttle_updated", table_name="address_throttle")
    op.drop_table("address_throttle")
