"""The audit log on a PostgreSQL catalog (a real server, started by tests/pgserver.py): the same migrations,
append, checkpoints in the catalog and the repository, `audit verify` and every SQL tamper case, the
0001 → head upgrade, and concurrent appenders serialised by the advisory lock."""

from __future__ import annotations

import json
import multiprocessing
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import make_url

from strongroom import Strongroom
from strongroom.audit.events import Event, utc_now
from strongroom.catalog import db
from tests.conftest import PASSPHRASE, Cli, make_tree
from tests.pgserver import PgServer, postgres_server, postgres_url  # noqa: F401 (fixtures)


def _dbname(url: str) -> str:
    return str(make_url(url).database)


def _sql(server: PgServer, url: str, *statements: str, params: tuple[Any, ...] = ()) -> None:
    with server.connect(_dbname(url)) as conn:
        for st in statements:
            conn.execute(st, params or None)


def _open(repo_path: Path, url: str):  # type: ignore[no-untyped-def]
    sr = Strongroom.open(str(repo_path), PASSPHRASE, env={**_env(), "STRONGROOM_CATALOG": url})
    s = sr._session
    log = s.audit_log()
    assert log is not None
    return sr, s, log


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.fixture
def pg_logged(tmp_path: Path, repo_path: Path, postgres_url: str) -> tuple[Path, str]:  # noqa: F811
    env = {**_env(), "STRONGROOM_CATALOG": postgres_url}
    sr = Strongroom.init(str(repo_path), PASSPHRASE, env=env, user="carol")
    src = make_tree(tmp_path / "src", {"a.txt": b"a1"})
    sr.commit(str(src), message="one", workers=1)
    for i in range(5):
        (src / "a.txt").write_bytes(f"a{i + 2}".encode())
        sr.commit(str(src), message=f"v{i + 2}", workers=1)
        sr.read("main", "a.txt")
    return repo_path, postgres_url


def _verify(repo_path: Path, url: str):  # type: ignore[no-untyped-def]
    _, s, log = _open(repo_path, url)
    return log.verify(s.open())


def test_the_log_lives_in_postgresql_and_verifies(pg_logged: tuple[Path, str], postgres_server: PgServer) -> None:  # noqa: F811
    repo_path, url = pg_logged
    _, s, log = _open(repo_path, url)
    events = log.query()
    assert [e.seq for e in events] == list(range(len(events))) and len(events) >= 12
    assert [e.action for e in events[:3]] == ["init", "commit", "commit"]
    rep = log.verify(s.open())
    assert rep.ok and rep.covered == rep.events and rep.checkpoints_repository == rep.checkpoints_catalog >= 12
    with postgres_server.connect(_dbname(url)) as conn:  # really in PostgreSQL: the rows, the leaf, the schema
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == rep.events
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == db.HEAD_REVISION
        leaf = conn.execute("SELECT leaf FROM audit_events WHERE seq=1").fetchone()[0]
        assert bytes(leaf) == events[1].leaf_hash()
    # proofs are served from the PostgreSQL catalog too
    doc = log.prove(s.open(), 3)
    assert doc["leaf_index"] == 3 and doc["event"]["seq"] == 3


TAMPER = {
    "edit": (["UPDATE audit_events SET actor='mallory' WHERE seq=4"], 4),
    "delete": (["DELETE FROM audit_events WHERE seq=5"], 5),
    "reorder": (["UPDATE audit_events SET seq=-1 WHERE seq=2", "UPDATE audit_events SET seq=2 WHERE seq=6",
                 "UPDATE audit_events SET seq=6 WHERE seq=-1"], 2),
    "truncate_tail": (["DELETE FROM audit_events WHERE seq>=8", "DELETE FROM audit_checkpoints WHERE tree_size>8"], 8),
    "edit_leaf_only": (["UPDATE audit_events SET leaf=decode(repeat('00', 32), 'hex') WHERE seq=3"], 3),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_sql_tamper_on_postgresql_is_caught(
    case: str,
    pg_logged: tuple[Path, str],
    postgres_server: PgServer,  # noqa: F811
) -> None:
    repo_path, url = pg_logged
    statements, first_bad = TAMPER[case]
    _sql(postgres_server, url, *statements)
    rep = _verify(repo_path, url)
    assert not rep.ok and rep.first_bad == first_bad, (rep.first_bad, rep.reason)


def test_edit_with_recomputed_leaf_and_the_cli_exit_1(
    pg_logged: tuple[Path, str],
    postgres_server: PgServer,  # noqa: F811
    cli: Cli,
) -> None:
    repo_path, url = pg_logged
    _, _, log = _open(repo_path, url)
    e = log.query()[4]
    forged = Event(4, e.time, "mallory", e.os_user, e.host, e.action, e.targets, e.outcome, e.details)
    _sql(postgres_server, url, "UPDATE audit_events SET actor='mallory', leaf=%s WHERE seq=4",
         params=(forged.leaf_hash(),))
    c = Cli(repo_path, cli.env)
    r = c("--catalog", url, "audit", "verify")
    assert r.code == 1, r.out + r.err
    assert "first bad sequence number 4" in r.err and len(r.err.strip().splitlines()) == 1
    assert "Traceback" not in r.err
    assert c("--catalog", url, "audit", "rebuild").code == 0
    r = c("--catalog", url, "--json", "audit", "verify")
    assert r.code == 0, r.err
    assert json.loads(r.out)["ok"] is True


def test_a_0001_postgresql_catalog_upgrades_in_place(pg_logged: tuple[Path, str], postgres_server: PgServer) -> None:  # noqa: F811
    repo_path, url = pg_logged
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("strongroom.catalog") / "migrations"))
    engine = db.make_engine(url)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
        conn.commit()
    assert db.current_revision(engine) == "0001"
    engine.dispose()
    rep = _verify(repo_path, url)  # opening the catalog upgrades it and backfills every leaf
    assert rep.ok, rep.reason
    with postgres_server.connect(_dbname(url)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_events WHERE leaf IS NULL").fetchone()[0] == 0


def _appender(repo_path: str, url: str, proc: int, barrier: Any, out: Any) -> None:
    try:
        sr = Strongroom.open(repo_path, PASSPHRASE, env={**_env(), "STRONGROOM_CATALOG": url}, user=f"p{proc}")
        s = sr._session
        repo, log = s.open(), s.audit_log()
        assert log is not None
        barrier.wait(60)
        got = []
        for b in range(6):
            batch = [Event(0, utc_now(), f"p{proc}", "o", "h", "bench.append", {}, "ok", {"p": proc, "b": b, "j": j})
                     for j in range(5)]
            got.append([e.seq for e in log.append(batch)])
            log.seal(repo)
        out.put((got, None))
    except BaseException as e:
        out.put(([], f"{type(e).__name__}: {e}"))


def test_concurrent_appenders_on_postgresql(pg_logged: tuple[Path, str]) -> None:
    repo_path, url = pg_logged
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_appender, args=(str(repo_path), url, i, barrier, out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
    assert not [err for _, err in results if err]
    batches = [seqs for got, _ in results for seqs in got]
    assert all(seqs == list(range(seqs[0], seqs[0] + 5)) for seqs in batches)
    taken = [x for seqs in batches for x in seqs]
    assert len(taken) == len(set(taken)) == 4 * 6 * 5
    _, s, log = _open(repo_path, url)
    events = log.query()
    assert [e.seq for e in events] == list(range(len(events)))
    rep = log.verify(s.open())
    assert rep.ok and rep.covered == rep.events, rep.reason
