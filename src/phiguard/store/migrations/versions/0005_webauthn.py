"""WebAuthn credentials (passkeys and security keys), several per account.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webauthn_credentials",
        sa.Column("credential_id", sa.String(1400), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False),
        sa.Column("transports", sa.Text, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_used_at", sa.BigInteger, nullable=True),
        sa.Column("flagged_clone", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_webauthn_credentials_user", "webauthn_credentials", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_webauthn_credentials_user", table_name="webauthn_credentials")
    op.drop_table("webauthn_credentials")
