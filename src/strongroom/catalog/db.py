"""Engine and connections from an explicit SQLAlchemy URL, with the schema migrated by alembic from code.

SQLite (the default) runs in WAL mode with a busy timeout, and writers open their transaction with
``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock; readers never block each other.
On PostgreSQL the audit store serialises its writers with a transaction-scoped advisory lock instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib import resources
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from strongroom.errors import CatalogError, InputError

BUSY_TIMEOUT_MS = 30_000


def sqlite_url(path: str) -> str:
    return "sqlite:///" + os.path.abspath(path)


def _sqlite_path(url: str) -> str | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return u.database


def make_engine(url: str) -> Engine:
    """An engine for ``url``; an SQLite file's folder is created (mode 0700) and the file is WAL."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise InputError("--catalog is not a valid SQLAlchemy URL") from None
    path = _sqlite_path(url)
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", mode=0o700, exist_ok=True)
    try:
        if u.get_backend_name() == "sqlite":
            engine = create_engine(u, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            _sqlite_tuning(engine)
        else:
            engine = create_engine(u, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as e:
        raise CatalogError(f"cannot use {u.render_as_string(hide_password=True)}: {type(e).__name__}") from None
    return engine


def _sqlite_tuning(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is deferred)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("strongroom_writer", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextlib.contextmanager
def writer(engine: Engine) -> Iterator[Connection]:
    """A write transaction: BEGIN IMMEDIATE on SQLite; committed on success, rolled back on error."""
    with engine.connect() as conn:
        conn = conn.execution_options(strongroom_writer=True)
        with conn.begin():
            yield conn


@contextlib.contextmanager
def reader(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


# The newest revision under migrations/versions; a test keeps the two in step. Checking it first spares every
# command alembic's import (about half a second) when the schema is already current.
HEAD_REVISION = "0002"
_PG_MIGRATION_LOCK = 0x5354524F4E47  # an arbitrary advisory-lock key for the catalog's migrations


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision with the alembic environment shipped in this package.

    Runs as one writer transaction (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL) that first
    re-reads the revision, so processes opening a new or old catalog at once migrate it exactly once."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("strongroom.catalog") / "migrations"))
    with writer(engine) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        if _revision(conn) == HEAD_REVISION:
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _revision(conn: Connection) -> str | None:
    """The revision seen inside a transaction (no failing statement: PostgreSQL would abort the transaction)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row else None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        except SQLAlchemyError:
            return None
        return str(row[0]) if row else None
