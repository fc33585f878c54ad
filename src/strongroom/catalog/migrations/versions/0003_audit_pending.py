"""audit log: the events of commands still running

Revision ID: 0003
Revises: 0002

``audit_pending`` holds one row per running command, written before it changes or reads anything and
deleted in the transaction that appends its final event. A later command appends the row of a process that
has ended as an interrupted failure: a command killed part-way still leaves an event.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("process", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_pending")
