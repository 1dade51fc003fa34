"""OAuth clients: the purposes of use an application may declare.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the default of the client's kind (identity/clients.py), so applications
    # registered before this column keep working with the narrowest sensible set.
    with op.batch_alter_table("oauth_clients") as batch:
        batch.add_column(sa.Column("purposes", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.drop_column("purposes")
