"""flow timers: when a flow instance is next woken

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flows") as batch_op:
        batch_op.add_column(sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_flows_wake_at", ["wake_at"])


def downgrade() -> None:
    with op.batch_alter_table("flows") as batch_op:
        batch_op.drop_index("ix_flows_wake_at")
        batch_op.drop_column("wake_at")
