"""A throwaway PostgreSQL server for tests: initdb into a fresh folder, pg_ctl start on a Unix socket in that
folder (no TCP port, so nothing clashes with another cluster), one fresh database per test, stopped and
removed at the end. Nothing in strongroom knows it is a test server.

Getting the server: ``scripts/ensure-system-deps.sh postgresql`` finds initdb, or installs PostgreSQL with
apt-get when it is missing and we are root. initdb refuses to run as root, so as root the cluster runs as
the ``postgres`` user (``runuser``), in a folder that user owns. Under ``CI=true`` a server that cannot be
had fails the tests; elsewhere they are skipped with the reason.

Use from a test module: ``from tests.pgserver import postgres_server, postgres_url``.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests import sysdeps

PORT = 5432  # only names the socket file inside our own folder
_counter = itertools.count()


def _unavailable(reason: str) -> NoReturn:
    sysdeps.unavailable("PostgreSQL is required", "no PostgreSQL server for the catalog tests", reason)


@dataclass
class PgServer:
    bindir: str
    base: str  # the cluster's folder: data/, the socket and the log
    user: str | None  # the OS user the server runs as (None: ourselves)

    @property
    def socket_dir(self) -> str:
        return self.base

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={PORT}"

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def connect(self, database: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=PORT, user="postgres", dbname=database, autocommit=True)


def _bindir() -> str:
    return sysdeps.ensure("postgresql", "bindir", _unavailable)


def _start() -> PgServer:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install -e '.[dev]')")
    bindir = _bindir()
    user: str | None = None
    base = tempfile.mkdtemp(prefix="strongroom-pg-")  # short: a Unix socket path has ~100 bytes
    if os.geteuid() == 0:
        user = "postgres"
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            _unavailable("running as root and there is no 'postgres' user to run initdb as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    server = PgServer(bindir, base, user)
    data = os.path.join(base, "data")
    r = server.run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    if r.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        _unavailable(f"initdb failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    opts = (
        f"-c listen_addresses='' -p {PORT} -k {base} -c fsync=off -c full_page_writes=off "
        "-c synchronous_commit=off -c max_connections=50"
    )
    r = server.run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(base, "server.log"), "-w", "-o", opts, "start")
    if r.returncode != 0:
        log = Path(base, "server.log")
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        shutil.rmtree(base, ignore_errors=True)
        _unavailable(f"pg_ctl start failed: {(tail or r.stderr.strip().splitlines() or ['?'])[-1]}")
    return server


def _stop(server: PgServer) -> None:
    server.run(f"{server.bindir}/pg_ctl", "-D", os.path.join(server.base, "data"), "-m", "immediate", "-w", "stop")
    shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PgServer]:
    server = _start()
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture
def postgres_url(postgres_server: PgServer) -> str:
    """An SQLAlchemy URL of a new, empty database on the test server."""
    name = f"t{os.getpid()}_{next(_counter)}"
    with postgres_server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.url(name)
