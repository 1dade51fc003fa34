"""Privacy monitoring: datasets, alerts, cases, suppression rules, notifications.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_loads",
        sa.Column("load_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("loaded_at", sa.BigInteger, nullable=False),
        sa.Column("loaded_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_monitor_loads_kind", "monitor_loads", ["tenant", "kind", "state"])
    op.create_table(
        "monitor_chunks",
        sa.Column("load_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("first_at", sa.BigInteger, nullable=True),
        sa.Column("last_at", sa.BigInteger, nullable=True),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("load_id", "seq"),
    )
    op.create_table(
        "monitor_alerts",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("patient_ids", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("first_event_at", sa.BigInteger, nullable=False),
        sa.Column("last_event_at", sa.BigInteger, nullable=False),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("case_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("disposition", sa.String(32), nullable=True),
        sa.Column("suppressed_by", sa.String(32), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("closed_at", sa.BigInteger, nullable=True),
        sa.Column("notified_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_monitor_alerts_queue", "monitor_alerts", ["tenant", "status", "score"])
    op.create_index("ix_monitor_alerts_user", "monitor_alerts", ["tenant", "user_id"])
    op.create_index("ix_monitor_alerts_case", "monitor_alerts", ["case_id"])
    op.create_table(
        "monitor_alert_patients",
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "alert_id"),
    )
    op.create_index("ix_monitor_alert_patients_alert", "monitor_alert_patients", ["alert_id"])
    op.create_table(
        "monitor_cases",
        sa.Column("case_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("patient_ids", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("opened_at", sa.BigInteger, nullable=False),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("disposition", sa.String(32), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("closed_at", sa.BigInteger, nullable=True),
        sa.Column("notified_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_monitor_cases_queue", "monitor_cases", ["tenant", "status", "score"])
    op.create_index("ix_monitor_cases_user", "monitor_cases", ["tenant", "user_id"])
    op.create_table(
        "monitor_notes",
        sa.Column("note_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_monitor_notes_target", "monitor_notes", ["target", "created_at"])
    op.create_table(
        "monitor_suppressions",
        sa.Column("rule_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("dek_version", sa.Integer, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
    )
    op.create_index(
        "ix_monitor_suppressions_detector",
        "monitor_suppressions",
        ["tenant", "detector", "expires_at"],
    )
    op.create_table(
        "monitor_incident_referrals",
        sa.Column("referral_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("alert_id", sa.String(64), nullable=True),
        sa.Column("case_id", sa.String(64), nullable=True),
        sa.Column("referred_by", sa.String(200), nullable=False),
        sa.Column("referred_at", sa.BigInteger, nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=True),
        sa.Column("taken_at", sa.BigInteger, nullable=True),
    )
    op.create_index(
        "ix_monitor_referrals_open", "monitor_incident_referrals", ["tenant", "taken_at"]
    )
    op.create_table(
        "monitor_events",
        sa.Column("event_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_monitor_events_target", "monitor_events", ["target", "at"])
    op.create_table(
        "monitor_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


_INDEXES = {
    "monitor_loads": ["ix_monitor_loads_kind"],
    "monitor_alerts": [
        "ix_monitor_alerts_queue",
        "ix_monitor_alerts_user",
        "ix_monitor_alerts_case",
    ],
    "monitor_alert_patients": ["ix_monitor_alert_patients_alert"],
    "monitor_cases": ["ix_monitor_cases_queue", "ix_monitor_cases_user"],
    "monitor_notes": ["ix_monitor_notes_target"],
    "monitor_suppressions": ["ix_monitor_suppressions_detector"],
    "monitor_incident_referrals": ["ix_monitor_referrals_open"],
    "monitor_events": ["ix_monitor_events_target"],
}


def downgrade() -> None:
    for name in (
        "monitor_cursors",
        "monitor_events",
        "monitor_incident_referrals",
        "monitor_suppressions",
        "monitor_notes",
        "monitor_cases",
        "monitor_alert_patients",
        "monitor_alerts",
        "monitor_chunks",
        "monitor_loads",
    ):
        for index in _INDEXES.get(name, []):
            op.drop_index(index, table_name=name)
        op.drop_table(name)
