"""audit log: events, checkpoints, segments, meta

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

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=False),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("os_user", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.create_index("ix_audit_events_actor", ["actor"])
        batch.create_index("ix_audit_events_action", ["action"])
        batch.create_index("ix_audit_events_time", ["time"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", _SEQ, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("compact", sa.LargeBinary(), nullable=False),
        sa.Column("object_name", sa.Text(), nullable=True),
        sa.Column("time", sa.String(40), nullable=False),
    )
    op.create_table(
        "audit_segments",
        sa.Column("first", _SEQ, primary_key=True, autoincrement=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("object_name", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for name in ("audit_segments", "audit_checkpoints", "audit_events", "audit_meta"):
        op.drop_table(name)
