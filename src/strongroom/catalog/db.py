"""Engine and connections from an explicit SQLAlchemy URL, with the schema migrated by alembic from code.

SQLite (the default) runs in WAL mode with a busy timeout, and writers open their transaction with
``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock; readers never block each other.
On PostgreSQL the audit store serialises its writers with a transaction-scoped advisory lock instead.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import weakref
from collections.abc import Iterator
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, SAWarning, SQLAlchemyError

from strongroom.errors import CatalogError, InputError

BUSY_TIMEOUT_MS = 30_000


def sqlite_url(path: str) -> str:
    return "sqlite:///" + os.path.abspath(path)


def sqlite_intact(path: str) -> bool:
    """Whether the SQLite file at path opens read-only and passes SQLite's own quick check: a catalog that
    failed for another reason (a full disk, an I/O error, a lock) is not damaged and must not be set aside."""
    import sqlite3

    try:
        # immutable: no lock, no -wal or -shm to create, which a full disk would refuse
        con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=5)
        try:
            return bool(con.execute("PRAGMA quick_check").fetchone() == ("ok",))
        finally:
            con.close()
    except sqlite3.Error:
        return False


# What the pysqlite driver takes from the query string of a URL; SQLite reads anything else only with uri=true.
_PYSQLITE_ARGS = frozenset(
    {"uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements"}
)


def _uri_mode(u: URL) -> bool:
    return str(u.query.get("uri", "")).lower() in ("true", "1", "yes", "on")


def _sqlite_path(u: URL) -> str | None:
    """The file of an SQLite URL (None for another database, or one in memory)."""
    if u.get_backend_name() != "sqlite" or _in_memory(u):
        return None
    database = u.database or ""
    if _uri_mode(u) and database.startswith("file:"):  # an SQLite URI filename: file:/abs/x.db, file:x.db
        return unquote(urlsplit(database).path)
    return database


def _in_memory(u: URL) -> bool:
    """Whether an SQLite URL names a database held in memory: sqlite://, sqlite:///, sqlite:///:memory:,
    and the URI forms file::memory: and mode=memory."""
    database = u.database or ""
    if database in ("", ":memory:") or u.query.get("mode") == "memory":
        return True
    return database.startswith("file:") and unquote(urlsplit(database).path) in ("", ":memory:")


def _check_sqlite_url(u: URL) -> None:
    """Refuse what SQLite would not do as asked: a database in memory (the audit log would vanish with the
    connection, and commands close their connections before forking workers), repeated arguments, and URL
    arguments the driver would ignore (it warns, and the user meant them)."""
    if _in_memory(u):
        raise InputError("--catalog: an in-memory SQLite database cannot hold the audit log; give a file")
    repeated = sorted(k for k, v in u.query.items() if not isinstance(v, str))
    if repeated:
        raise InputError(f"--catalog: URL argument given twice: {', '.join(repeated)}")
    ignored = sorted(set(u.query) - _PYSQLITE_ARGS)
    if ignored and not (_uri_mode(u) and (u.database or "").startswith("file:")):
        raise InputError(
            f"--catalog: SQLite would ignore the URL argument(s) {', '.join(ignored)}: they need uri=true and a "
            "file: URI (sqlite:///file:/path/c.sqlite?mode=ro&uri=true)"
        )


def check_url(url: str) -> URL:
    """``url`` parsed, or InputError when it cannot be parsed, names an SQLite database in memory or carries
    arguments the SQLite driver would ignore. Cheap (no engine, no connection): sessions check a configured
    catalog before any work, so that `init` does not create a repository it then cannot record."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise InputError("--catalog is not a valid SQLAlchemy URL") from None
    if u.get_backend_name() == "sqlite":
        _check_sqlite_url(u)
    return u


def make_engine(url: str) -> Engine:
    """An engine for ``url``; an SQLite file's folder is created (mode 0700) and the file is WAL.

    Refused (InputError) as ``check_url`` refuses; a warning SQLAlchemy gives about the URL is refused the
    same way, so it never reaches stderr."""
    u = check_url(url)
    path = _sqlite_path(u)
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", mode=0o700, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SAWarning)
            if u.get_backend_name() == "sqlite":
                engine = create_engine(u, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
                _sqlite_tuning(engine)
            else:
                engine = create_engine(u, pool_pre_ping=True)
    except SAWarning as w:
        raise InputError(f"--catalog: {_one_line(str(w), u)}") from None
    except (SQLAlchemyError, ImportError) as e:
        raise CatalogError(f"cannot use {u.render_as_string(hide_password=True)}: {type(e).__name__}") from None
    _ENGINES.add(engine)
    return engine


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_connections_in_child() -> None:
    """A forked worker never uses the catalog: it drops the parent's pooled connections without closing
    them, which would end the parent's sessions (SQLAlchemy's advice for multiprocessing)."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_connections_in_child)


def _one_line(message: str, u: URL) -> str:
    """The first line of a database error or warning, cut short and without the URL's password."""
    lines = message.strip().splitlines()
    first = lines[0][:200] if lines else ""
    if u.password:
        first = first.replace(str(u.password), "***")
    return first


def _db_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    """SQLAlchemy's errors, and the driver's own (raised by its cursors, which the audit store uses directly)."""
    dbapi = getattr(engine.dialect, "dbapi", None)
    error = getattr(dbapi, "Error", None)
    return (
        (SQLAlchemyError, error) if isinstance(error, type) and issubclass(error, BaseException) else (SQLAlchemyError,)
    )


def catalog_error(engine: Engine, e: BaseException) -> CatalogError:
    """A database error as a CatalogError: one line, no traceback, no password."""
    return CatalogError(f"the catalog database failed: {type(e).__name__}: {_one_line(str(e), engine.url)}")


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
    """A write transaction: BEGIN IMMEDIATE on SQLite; committed on success, rolled back on error. A database
    error (connecting, in the block, at commit) leaves it as a CatalogError."""
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(strongroom_writer=True)
            with conn.begin():
                yield conn
    except _db_errors(engine) as e:
        raise catalog_error(engine, e) from e


@contextlib.contextmanager
def reader(engine: Engine) -> Iterator[Connection]:
    """A read transaction; a database error leaves it as a CatalogError."""
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
    except _db_errors(engine) as e:
        raise catalog_error(engine, e) from e


# The newest revision under migrations/versions; a test keeps the two in step. Checking it first spares every
# command alembic's import (about half a second) when the schema is already current.
REVISIONS = ("0001", "0002", "0003")  # every migration this version ships, oldest first
HEAD_REVISION = REVISIONS[-1]
_PG_MIGRATION_LOCK = 0x5354524F4E47  # an arbitrary advisory-lock key for the catalog's migrations


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision with the alembic environment shipped in this package.

    Runs as one writer transaction (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL) that first
    re-reads the revision, so processes opening a new or old catalog at once migrate it exactly once."""
    found = current_revision(engine)
    if found == HEAD_REVISION or _newer(found):
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("strongroom.catalog") / "migrations"))
    with writer(engine) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        found = _revision(conn)
        if found == HEAD_REVISION or _newer(found):
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _newer(revision: str | None) -> bool:
    """A revision this version does not know: a newer strongroom migrated the catalog. Migrations only add
    tables and columns, so this version goes on with the ones it knows (an older one would stop on it)."""
    return revision is not None and revision not in REVISIONS


def _revision(conn: Connection) -> str | None:
    """The revision seen inside a transaction (no failing statement: PostgreSQL would abort the transaction)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row else None


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            try:
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            except SQLAlchemyError:
                return None
            return str(row[0]) if row else None
    except _db_errors(engine) as e:
        raise catalog_error(engine, e) from e


def sqlite_file(url: str) -> str | None:
    """The file an SQLite catalog URL names (None for another database); refused as ``check_url`` refuses."""
    return _sqlite_path(check_url(url))


def masked_url(url: str) -> str:
    """The URL of a catalog in use (so one that parses) with its password shown as ``***``."""
    return make_url(url).render_as_string(hide_password=True)
