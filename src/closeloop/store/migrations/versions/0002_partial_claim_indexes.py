"""partial indexes for claiming pending inbox rows and open commands

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'pending'")
_OPEN = sa.text("status IN ('pending', 'in_flight')")


def upgrade() -> None:
    op.drop_index("ix_inbox_pending", table_name="inbox")
    op.drop_index("ix_commands_due", table_name="commands")
    op.create_index(
        "ix_inbox_pending", "inbox", ["id"], postgresql_where=_PENDING, sqlite_where=_PENDING
    )
    op.create_index(
        "ix_commands_open", "commands", ["id"], postgresql_where=_OPEN, sqlite_where=_OPEN
    )


def downgrade() -> None:
    op.drop_index("ix_commands_open", table_name="commands")
    op.drop_index("ix_inbox_pending", table_name="inbox")
    op.create_index("ix_commands_due", "commands", ["status", "next_attempt_at", "id"])
    op.create_index("ix_inbox_pending", "inbox", ["status", "id"])
