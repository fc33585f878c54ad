"""The audit log's tables behind a small API, so that only the catalog room speaks SQL.

Rows come back as SQLAlchemy rows (attribute access: ``row.seq``, ``row.note``); a transaction is an
opaque handle from ``writer()`` (serialised across processes) or ``reader()``. A database error inside
either (SQLAlchemy's, or the driver's from the cursors used directly) leaves it as a CatalogError: one line,
exit 1, no password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update

from strongroom.catalog import db
from strongroom.catalog.tables import audit_checkpoints, audit_events, audit_meta, audit_pending, audit_segments

_SQLITE_LEAF_ROWS = (
    'SELECT seq, "time", actor, os_user, host, "action", targets, outcome, details, leaf FROM audit_events '
    "WHERE seq >= ? AND seq < ? ORDER BY seq"
)
_EVENT_COLUMNS = ("seq", "time", "actor", "os_user", "host", "action", "targets", "outcome", "details", "leaf")
_SQLITE_INSERT_EVENT = (
    'INSERT INTO audit_events (seq, "time", actor, os_user, host, "action", targets, outcome, details, leaf) '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PG_WRITER_LOCK = 0x5354524F4E48  # advisory-lock key serialising the audit log's writers on PostgreSQL


class AuditStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def writer(self) -> Iterator[Connection]:
        with db.writer(self.engine) as conn:
            if self.engine.dialect.name == "postgresql":  # serialise writers, even before the first row exists
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_WRITER_LOCK})
            elif self.engine.dialect.name != "sqlite":
                conn.execute(select(audit_meta).where(audit_meta.c.key == "log_id").with_for_update())
            yield conn

    @contextlib.contextmanager
    def reader(self) -> Iterator[Connection]:
        with db.reader(self.engine) as conn:
            yield conn

    # meta
    def meta(self, tx: Connection) -> dict[str, str]:
        return {r.key: r.value for r in tx.execute(select(audit_meta))}

    def set_meta(self, tx: Connection, values: dict[str, str]) -> None:
        tx.execute(delete(audit_meta))
        tx.execute(insert(audit_meta), [{"key": k, "value": v} for k, v in values.items()])

    # events
    def max_seq(self, tx: Connection) -> int | None:
        top = tx.execute(select(func.max(audit_events.c.seq))).scalar()
        return None if top is None else int(top)

    def count(self, tx: Connection) -> int:
        return int(tx.execute(select(func.count()).select_from(audit_events)).scalar() or 0)

    def insert_events(self, tx: Connection, rows: list[dict[str, Any]]) -> None:
        if self.engine.dialect.name == "sqlite" and rows:  # the driver's executemany: no per-row compile step
            cur = tx.connection.cursor()
            try:
                cur.executemany(_SQLITE_INSERT_EVENT, [tuple(r[c] for c in _EVENT_COLUMNS) for r in rows])
            finally:
                cur.close()
            return
        for i in range(0, len(rows), 5000):
            tx.execute(insert(audit_events), rows[i : i + 5000])

    def leaf_rows(self, tx: Connection, start: int = 0, end: int | None = None) -> Iterator[tuple[Any, ...]]:
        """(seq, time, actor, os_user, host, action, targets, outcome, details, leaf) tuples in seq order:
        what verifying, sealing and proving need, as plain tuples. On SQLite they come straight from the
        driver's cursor (a third faster than Core rows, which matters at 10^6 events); elsewhere from a
        streamed Core result (a server-side cursor on PostgreSQL, so memory stays flat)."""
        if self.engine.dialect.name == "sqlite":
            cur = tx.connection.cursor()
            try:
                cur.execute(_SQLITE_LEAF_ROWS, (int(start), 2**63 - 1 if end is None else int(end)))
                while rows := cur.fetchmany(20_000):
                    yield from rows
            finally:
                cur.close()
            return
        c = audit_events.c
        q = select(c.seq, c.time, c.actor, c.os_user, c.host, c.action, c.targets, c.outcome, c.details, c.leaf)
        q = q.where(c.seq >= start).order_by(c.seq)
        if end is not None:
            q = q.where(c.seq < end)
        for part in tx.execute(q, execution_options={"yield_per": 20_000}).partitions():
            yield from (tuple(r) for r in part)

    def recorded_leaves(self, tx: Connection, end: int) -> list[tuple[int, bytes]]:
        """(seq, recorded leaf hash) of the events below ``end``, in seq order: enough to build the tree for
        proofs, whose root is then compared with a signed checkpoint."""
        c = audit_events.c
        q = select(c.seq, c.leaf).where(c.seq < end).order_by(c.seq)
        return [(int(r[0]), bytes(r[1])) for r in tx.execute(q, execution_options={"yield_per": 50_000})]

    def events(self, tx: Connection, start: int = 0, end: int | None = None) -> Iterator[Any]:
        q = select(audit_events).where(audit_events.c.seq >= start).order_by(audit_events.c.seq)
        if end is not None:
            q = q.where(audit_events.c.seq < end)
        # per statement: Connection.execution_options() would stick to the connection (and make the next
        # INSERT of the transaction a server-side cursor on PostgreSQL)
        yield from tx.execute(q, execution_options={"yield_per": 10_000})

    def query(
        self,
        actor: str | None,
        action: str | None,
        since: str | None,
        until: str | None,
        after_seq: int,
        limit: int | None,
        newest: bool,
    ) -> list[Any]:
        c = audit_events.c
        q = select(audit_events).where(c.seq > after_seq)
        if actor is not None:
            q = q.where(c.actor == actor)
        if action is not None:
            q = q.where((c.action == action) | c.action.startswith(action + ".", autoescape=True))
        if since is not None:
            q = q.where(c.time >= since)
        if until is not None:
            q = q.where(c.time < until)
        q = q.order_by(c.seq.desc() if newest else c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self.reader() as tx:
            return list(tx.execute(q))

    # checkpoints
    def checkpoints(self, tx: Connection) -> list[Any]:
        return list(tx.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size)))

    def last_checkpoint(self, tx: Connection, size: int | None = None) -> Any:
        q = select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size.desc())
        if size is not None:
            q = q.where(audit_checkpoints.c.tree_size == size)
        return tx.execute(q.limit(1)).first()

    def insert_checkpoints(self, tx: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            tx.execute(insert(audit_checkpoints), rows)

    # segments
    def segment_names(self, tx: Connection) -> list[tuple[int, str]]:
        """(first seq, object name) of every sealed segment the catalog recorded."""
        rows = tx.execute(select(audit_segments.c.first, audit_segments.c.object_name).order_by(audit_segments.c.first))
        return [(int(first), str(name)) for first, name in rows]

    def segments_end(self, tx: Connection) -> int:
        top = tx.execute(select(func.max(audit_segments.c.first + audit_segments.c.count))).scalar()
        return int(top or 0)

    def insert_segments(self, tx: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            tx.execute(insert(audit_segments), rows)

    # the events of running commands
    def insert_pending(self, tx: Connection, row: dict[str, Any]) -> None:
        tx.execute(insert(audit_pending), [row])

    def pending(self, tx: Connection) -> list[Any]:
        return list(tx.execute(select(audit_pending).order_by(audit_pending.c.time, audit_pending.c.id)))

    def update_pending(self, tx: Connection, pending_id: str, event: str) -> None:
        tx.execute(update(audit_pending).where(audit_pending.c.id == pending_id).values(event=event))

    def delete_pending(self, tx: Connection, ids: list[str]) -> int:
        """Delete these pending rows; returns how many there were."""
        if not ids:
            return 0
        return int(tx.execute(delete(audit_pending).where(audit_pending.c.id.in_(ids))).rowcount or 0)

    def clear(self, tx: Connection) -> None:
        for t in (audit_events, audit_checkpoints, audit_segments, audit_meta):
            tx.execute(delete(t))


def open_store(url: str) -> AuditStore:
    """The store at ``url``, its schema migrated to the newest revision first (a no-op when current)."""
    engine = db.make_engine(url)
    db.migrate(engine)
    return AuditStore(engine)
