"""alert state: conditions notified (firing, last sent, channels owed) and claims (the
evaluator's lease, the daily digest's slot)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_conditions",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("firing", sa.Boolean, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("owed", sa.JSON, nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "alert_claims",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True)),
        sa.Column("owed", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_claims")
    op.drop_table("alert_conditions")
