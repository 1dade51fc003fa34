"""The vault: sealed resources, heads, blind-index tokens, data keys, API tokens.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("rtype", sa.String(64), nullable=False),
        sa.Column("rid", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("compartment", sa.String(128), nullable=False),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=True),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "rtype", "rid", "version"),
    )
    op.create_index("ix_resources_compartment", "resources", ["tenant", "compartment"])
    op.create_table(
        "resource_heads",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("rtype", sa.String(64), nullable=False),
        sa.Column("rid", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("compartment", sa.String(128), nullable=False),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "rtype", "rid"),
    )
    op.create_index("ix_heads_compartment", "resource_heads", ["tenant", "compartment", "rtype"])
    op.create_index("ix_heads_rid", "resource_heads", ["tenant", "rid"])
    op.create_index("ix_heads_updated", "resource_heads", ["tenant", "rtype", "last_updated"])
    op.create_table(
        "search_tokens",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("rtype", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("token", sa.LargeBinary(16), nullable=False),
        sa.Column("rid", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "rtype", "param", "token", "rid"),
    )
    op.create_index("ix_tokens_resource", "search_tokens", ["tenant", "rtype", "rid"])
    op.create_table(
        "data_keys",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("compartment", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("kek_version", sa.Integer, nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("changed_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "compartment", "version"),
    )
    op.create_index("ix_data_keys_kek", "data_keys", ["provider", "kek_version"])
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    op.create_table(
        "import_journal",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("unit", sa.Integer, nullable=False),
        sa.Column("resources", sa.Integer, nullable=False),
        sa.Column("done_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("source", "unit"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for name in (
        "settings",
        "import_journal",
        "api_tokens",
        "data_keys",
        "search_tokens",
        "resource_heads",
        "resources",
    ):
        op.drop_table(name)
