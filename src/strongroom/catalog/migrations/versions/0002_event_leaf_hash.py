"""audit log: each event's leaf hash, recorded at append time

Revision ID: 0002
Revises: 0001

``audit_events.leaf`` holds SHA-256(0x00 ‖ the event's RFC 8785 canonical JSON), computed when the event is
appended. `audit verify` rebuilds the canonical bytes from the columns by concatenation (the targets and
details columns already hold canonical JSON) and compares their hash with it, instead of parsing and
re-serialising every event. Existing rows are backfilled from their columns exactly as the leaf was computed
before this revision (``targets`` and ``details`` parsed, the event serialised with sorted keys, no
whitespace, UTF-8), so every checkpoint signed before the upgrade still matches, and a row edited before the
upgrade still fails its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 5000
_FIELDS = ("seq", "time", "actor", "os_user", "host", "action", "targets", "outcome", "details")


def _leaf(row: Any) -> bytes:
    try:
        obj = {
            "action": row.action,
            "actor": row.actor,
            "details": json.loads(row.details),
            "host": row.host,
            "os_user": row.os_user,
            "outcome": row.outcome,
            "seq": row.seq,
            "targets": json.loads(row.targets),
            "time": row.time,
        }
        data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    except (ValueError, TypeError):  # a damaged row gets a leaf nothing hashes to: verify names it
        return b"\xff" * 32
    return hashlib.sha256(b"\x00" + data).digest()


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("leaf", sa.LargeBinary(32), nullable=True))
    conn = op.get_bind()
    ev = sa.table("audit_events", *(sa.column(c) for c in _FIELDS), sa.column("leaf", sa.LargeBinary(32)))
    last = -1
    while True:
        rows = conn.execute(sa.select(ev).where(ev.c.seq > last).order_by(ev.c.seq).limit(_BATCH)).all()
        if not rows:
            break
        conn.execute(
            sa.update(ev).where(ev.c.seq == sa.bindparam("k")),
            [{"k": r.seq, "leaf": _leaf(r)} for r in rows],
        )
        last = rows[-1].seq
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("leaf", existing_type=sa.LargeBinary(32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("leaf")
