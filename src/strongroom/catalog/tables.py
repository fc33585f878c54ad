"""SQLAlchemy tables of the catalog. The audit log: one row per event, its fields as columns; and the events of
commands still running (``audit_pending``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, MetaData, String, Table, Text

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# key/value facts about this catalog: log_id, repo_id
audit_meta = Table(
    "audit_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("time", String(40), nullable=False),
    Column("actor", Text, nullable=False),
    Column("os_user", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("targets", Text, nullable=False),  # canonical JSON object: repository, branch, version, paths
    Column("outcome", String(16), nullable=False),
    Column("details", Text, nullable=False),  # canonical JSON object
    # the event's Merkle leaf hash, SHA-256(0x00 ‖ RFC 8785 canonical JSON of the event), recorded at append
    # time; `audit verify` checks that the columns above still hash to it, then builds the tree from it
    Column("leaf", LargeBinary(32), nullable=False),
    Index("ix_audit_events_actor", "actor"),
    Index("ix_audit_events_action", "action"),
    Index("ix_audit_events_time", "time"),
)

# Every signed checkpoint; ``compact`` is the compact range (right border) of the tree at that size,
# so the next checkpoint extends it without reading older events.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tree_size", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("compact", LargeBinary, nullable=False),
    Column("object_name", Text, nullable=True),
    Column("time", String(40), nullable=False),
)

# Events already sealed into repository segments: [first, first+count) under ``object_name``.
audit_segments = Table(
    "audit_segments",
    metadata,
    Column("first", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("object_name", Text, nullable=False),
)

# The event of each command that is running: written when it starts, before it changes or reads anything, and
# deleted in the transaction that appends its final event. A row whose process has ended is appended by a later
# command as an interrupted failure, so a command killed part-way (SIGKILL, power loss) is still recorded.
audit_pending = Table(
    "audit_pending",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("time", String(40), nullable=False),  # when the command started
    Column("host", Text, nullable=False),
    Column("process", Text, nullable=False),  # JSON: pid, boot id, PID namespace, start time of the process
    Column("event", Text, nullable=False),  # JSON: the event as it stood when the command started
)
