"""reconciliation runs and their drifts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reconcile_runs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("domains", sa.JSON, nullable=False),
        sa.Column("repair", sa.Boolean, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("records", sa.JSON, nullable=False),
        sa.Column("pages", sa.JSON, nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "reconcile_drifts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("field", sa.String(255)),
        sa.Column("values", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("repair", sa.Text, nullable=False),
        sa.Column("exception_id", sa.BigInteger),
    )
    op.create_index("ix_reconcile_drifts_run", "reconcile_drifts", ["run_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_reconcile_drifts_run", "reconcile_drifts")
    op.drop_table("reconcile_drifts")
    op.drop_table("reconcile_runs")
