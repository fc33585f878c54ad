"""Catalog schema migrations: a catalog of revision 0001 (no recorded leaf hashes) upgrades in place to the
head revision, its old checkpoints still verify, an edit made before the upgrade is still caught, and
processes opening a fresh catalog at once migrate it exactly once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

from strongroom import Strongroom
from strongroom.catalog import db
from strongroom.catalog.auditdb import open_store
from tests.conftest import PASSPHRASE, make_tree


def _downgrade(url: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("strongroom.catalog") / "migrations"))
    engine = db.make_engine(url)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()
    engine.dispose()


def _catalog(tmp_path: Path) -> Path:
    found = list((tmp_path / "state" / "catalogs").glob("*.sqlite"))
    assert len(found) == 1
    return found[0]


def _columns(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    cols = [r[1] for r in con.execute("PRAGMA table_info(audit_events)")]
    con.close()
    return cols


def _logged_repo(tmp_path: Path, repo_path: Path) -> Strongroom:
    sr = Strongroom.init(str(repo_path), PASSPHRASE, user="carol")
    src = make_tree(tmp_path / "src", {"a.txt": b"1"})
    sr.commit(str(src), workers=1)
    for _ in range(3):
        sr.read("main", "a.txt")
    return sr


def _verify(repo_path: Path):  # type: ignore[no-untyped-def]
    s = Strongroom.open(str(repo_path), PASSPHRASE)._session
    log = s.audit_log()
    assert log is not None
    return log.verify(s.open())


def test_a_0001_catalog_upgrades_and_still_verifies(tmp_path: Path, repo_path: Path) -> None:
    _logged_repo(tmp_path, repo_path)
    path = _catalog(tmp_path)
    before = _verify(repo_path)
    assert before.ok
    _downgrade(db.sqlite_url(str(path)), "0001")
    assert "leaf" not in _columns(path)
    assert db.current_revision(db.make_engine(db.sqlite_url(str(path)))) == "0001"
    after = _verify(repo_path)  # opening the catalog migrates it (backfilling every leaf from the columns)
    assert "leaf" in _columns(path)
    assert after.ok, after.reason
    assert after.events >= before.events and after.covered >= before.covered


def test_an_edit_made_before_the_upgrade_is_still_caught(tmp_path: Path, repo_path: Path) -> None:
    _logged_repo(tmp_path, repo_path)
    path = _catalog(tmp_path)
    _downgrade(db.sqlite_url(str(path)), "0001")
    con = sqlite3.connect(path)
    con.execute("UPDATE audit_events SET actor='mallory' WHERE seq=1")
    con.commit()
    con.close()
    rep = _verify(repo_path)  # the backfilled leaf hashes the edited row, which the checkpoint does not
    assert not rep.ok and rep.first_bad == 1, (rep.first_bad, rep.reason)


def _open(url: str, barrier: Any, out: Any) -> None:
    barrier.wait(30)  # all four start migrating at the same moment
    try:
        store = open_store(url)
        out.put(db.current_revision(store.engine))
        store.close()
    except Exception as e:
        out.put(f"{type(e).__name__}: {e}")


def test_processes_opening_a_new_catalog_at_once_migrate_it_once(tmp_path: Path) -> None:
    url = db.sqlite_url(str(tmp_path / "fresh.sqlite"))
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == [db.HEAD_REVISION] * 4
    con = sqlite3.connect(tmp_path / "fresh.sqlite")
    assert con.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    con.close()
