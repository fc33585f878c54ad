"""The audit log end to end: events for every command family (ok, denied, failed), checkpoints signed and
stored in the catalog and the repository, every SQL tamper case caught by `audit verify` naming the first
bad sequence number, proofs checked offline, and a catalog rebuilt from the repository alone."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.audit.events import Event
from strongroom.errors import PolicyDenied, UnknownPath
from strongroom.service import branches, gc, merge, workspace
from strongroom.service import versions as ver
from tests.conftest import PASSPHRASE, Cli, make_tree


def _session(sr: Strongroom):  # type: ignore[no-untyped-def]
    return sr._session


def _events(sr: Strongroom) -> list:  # type: ignore[type-arg]
    s = Strongroom.open(sr._session.settings.repo or "", PASSPHRASE)._session
    log = s.audit_log()
    assert log is not None
    return log.query()


def _db(tmp_path: Path) -> Path:
    found = list((tmp_path / "state" / "catalogs").glob("*.sqlite"))
    assert len(found) == 1
    return found[0]


def _verify(repo_path: Path):  # type: ignore[no-untyped-def]
    s = Strongroom.open(str(repo_path), PASSPHRASE)._session
    log = s.audit_log()
    assert log is not None
    return log.verify(s.open())


@pytest.fixture
def logged(tmp_path: Path, repo_path: Path) -> Strongroom:
    """A repository whose log holds 24+ events (commits, reads, branches), all covered by checkpoints."""
    sr = Strongroom.init(str(repo_path), PASSPHRASE, user="carol")
    src = make_tree(tmp_path / "src", {"a.txt": b"a1", "d/b.bin": b"b" * 100})
    sr.commit(str(src), message="one", workers=1)
    for i in range(10):
        (src / "a.txt").write_bytes(f"a{i + 2}".encode())
        sr.commit(str(src), message=f"v{i + 2}", workers=1)
        sr.read("main", "a.txt")
    return sr


# ----------------------------------------------------------------------------- events per command family


def test_repository_and_version_commands_record_events(tmp_path: Path, repo_path: Path) -> None:
    sr = Strongroom.init(str(repo_path), PASSPHRASE, user="carol")
    s = _session(sr)
    src = make_tree(tmp_path / "src", {"x/a.txt": b"hello", "b.txt": b"b"})
    v1 = sr.commit(str(src), message="first", workers=1).id
    sr.checkout(v1, str(tmp_path / "out"), include=["x/*"])
    assert sr.read(v1, "b.txt") == b"b"
    sr.ls("main")
    sr.diff(v1, "main")
    sr.log()
    sr.verify()
    sr.stats()
    with pytest.raises(UnknownPath):
        sr.read("main", "missing.txt")
    ev = _events(sr)
    actions = [e.action for e in ev]
    assert actions[:2] == ["init", "commit"]
    commit = ev[1]
    assert commit.actor == "carol" and commit.targets["version"] == v1 and commit.targets["branch"] == "main"
    assert commit.targets["paths"] == [str(src)] and commit.outcome == "ok" and commit.host and commit.os_user
    checkout = next(e for e in ev if e.action == "checkout")
    assert checkout.targets["version"] == v1 and checkout.targets["paths"] == ["x/*"]
    cat = [e for e in ev if e.action == "cat"]
    assert cat[0].outcome == "ok" and cat[0].targets["paths"] == ["b.txt"]
    assert cat[1].outcome == "failed" and cat[1].details["error"]["class"] == "UnknownPath"
    for a in ("ls", "diff", "log", "verify", "stats"):
        assert a in actions
    assert [e.seq for e in ev] == list(range(len(ev)))
    assert PASSPHRASE not in json.dumps([e.to_json() for e in ev])
    rep = _verify(repo_path)
    assert rep.ok and rep.covered == rep.events and rep.checkpoints_repository >= 1
    del s


def test_branch_merge_gc_workspace_events_including_denied(tmp_path: Path, repo_path: Path) -> None:
    sr = Strongroom.init(str(repo_path), PASSPHRASE, user="dave")
    s = _session(sr)
    src = make_tree(tmp_path / "src", {"a.txt": b"1"})
    sr.commit(str(src), workers=1)
    branches.branch_create(s, "exp")
    branches.tag_create(s, "t1", "main")
    merge.protect(s, "main", [])
    with pytest.raises(PolicyDenied):
        ver.commit(s, str(src), branch="main", workers=1)
    ws = tmp_path / "ws"
    workspace.create(s, str(ws), "exp", None, [])
    (ws / "a.txt").write_bytes(b"2")
    workspace.commit(s, str(ws), "change", None, 0.0)
    merge.merge(s, "exp", "main")
    branches.branch_delete(s, "exp")
    gc.gc(s, dry_run=True)
    ev = _events(sr)
    by = {e.action: e for e in ev}
    for a in (
        "branch.create",
        "tag.create",
        "branch.protect",
        "workspace.create",
        "workspace.commit",
        "merge",
        "branch.delete",
        "gc",
    ):
        assert by[a].outcome == "ok", a
    denied = [e for e in ev if e.outcome == "denied"]
    assert len(denied) == 1 and denied[0].action == "commit"
    assert denied[0].details["error"]["class"] == "PolicyDenied"
    assert by["workspace.create"].targets["branch"] == "exp" and by["workspace.create"].targets["version"]
    assert by["merge"].targets["branch"] == "main"
    assert _verify(repo_path).ok


def test_cli_audit_commands_and_events(tmp_path: Path, cli: Cli) -> None:
    assert cli("init", "--user", "erin").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"1"})
    assert cli("commit", str(src)).code == 0
    bad = cli("cat", "main", "nope")
    assert bad.code == 2
    r = cli("audit", "log", "--json")
    assert r.code == 0, r.err
    ev = json.loads(r.out)
    assert [e["action"] for e in ev] == ["init", "commit", "cat"]
    assert ev[2]["outcome"] == "failed"
    r = cli("audit", "log", "--action", "commit", "--actor", "erin", "--json")
    assert [e["action"] for e in json.loads(r.out)] == ["commit"]
    assert json.loads(cli("audit", "log", "--since", "2999-01-01", "--json").out) == []
    r = cli("audit", "tail", "-n", "2")
    assert r.code == 0 and "audit.log" in r.out
    r = cli("audit", "verify")
    assert r.code == 0 and "audit log ok" in r.out, r.err
    r = cli("audit", "export", "--format", "jsonl")
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert lines[0]["seq"] == 0 and all("actor" in x for x in lines)
    assert cli("audit", "export", "--format", "csv").code == 2
    r = cli("custody", "main", "a.txt", "--json")
    rep = json.loads(r.out)
    assert rep["files"][0]["history"][0]["author"] == "erin"
    assert cli("custody", "main", "--html", str(tmp_path / "r.html")).code == 0
    assert "Chain of custody" in (tmp_path / "r.html").read_text()
    r = cli("custody", "--actor", "erin", "--json")
    assert {e["action"] for e in json.loads(r.out)["events"]} >= {"init", "commit"}


# ----------------------------------------------------------------------------- proofs


def test_prove_and_consistency_verify_offline(logged: Strongroom, tmp_path: Path, cli: Cli) -> None:
    c = Cli(Path(logged._session.settings.repo or ""), cli.env)
    r = c("audit", "prove", "5")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert set(doc) == {"leaf_index", "tree_size", "leaf_hash", "event", "audit_path", "root_hash", "checkpoint"}
    assert doc["leaf_index"] == 5 and doc["event"]["seq"] == 5
    (tmp_path / "p.json").write_text(r.out)
    key = c("audit", "key").out.strip()
    outsider = Cli(tmp_path / "nowhere", cli.env)  # offline: no repository, only the key
    r = outsider("audit", "check-proof", str(tmp_path / "p.json"), "--key", key, passphrase=None)
    assert r.code == 0 and r.out.startswith("ok: event 5"), r.err
    doc["event"]["actor"] = "mallory"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    r = outsider("audit", "check-proof", str(tmp_path / "bad.json"), "--key", key, passphrase=None)
    assert r.code == 1 and "leaf_hash" in r.err
    r = c("audit", "consistency", "3", str(doc["tree_size"]))
    assert r.code == 0, r.err
    (tmp_path / "c.json").write_text(r.out)
    assert c("audit", "check-proof", str(tmp_path / "c.json")).code == 0
    cdoc = json.loads(r.out)
    cdoc["old_root"] = "00" * 32
    (tmp_path / "c2.json").write_text(json.dumps(cdoc))
    assert c("audit", "check-proof", str(tmp_path / "c2.json")).code == 1


# ----------------------------------------------------------------------------- tamper suite (plain SQL)


def _sql(db: Path, *statements: str) -> None:
    con = sqlite3.connect(db)
    for st in statements:
        con.execute(st)
    con.commit()
    con.close()


TAMPER = {
    "edit": (["UPDATE audit_events SET actor='mallory' WHERE seq=7"], 7),
    "edit_details": (['UPDATE audit_events SET details=\'{"message":"x"}\' WHERE seq=4'], 4),
    "delete": (["DELETE FROM audit_events WHERE seq=9"], 9),
    "delete_renumber": (["DELETE FROM audit_events WHERE seq=9", "UPDATE audit_events SET seq=seq-1 WHERE seq>9"], 9),
    "insert": (
        [
            "UPDATE audit_events SET seq=-seq-1000 WHERE seq>=6",
            "UPDATE audit_events SET seq=-seq-1000+1 WHERE seq<0",
            "INSERT INTO audit_events SELECT 6,time,'mallory',os_user,host,'cat',targets,outcome,details,"
            "leaf FROM audit_events WHERE seq=5",
        ],
        6,
    ),
    "edit_leaf_only": (["UPDATE audit_events SET leaf=zeroblob(32) WHERE seq=5"], 5),
    "reorder": (
        [
            "UPDATE audit_events SET seq=-1 WHERE seq=3",
            "UPDATE audit_events SET seq=3 WHERE seq=8",
            "UPDATE audit_events SET seq=8 WHERE seq=-1",
        ],
        3,
    ),
    "truncate_tail": (
        ["DELETE FROM audit_events WHERE seq>=12", "DELETE FROM audit_checkpoints WHERE tree_size>12"],
        12,
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_sql_tamper_is_caught_with_first_bad_seq(case: str, logged: Strongroom, tmp_path: Path) -> None:
    statements, first_bad = TAMPER[case]
    _sql(_db(tmp_path), *statements)
    rep = _verify(Path(logged._session.settings.repo or ""))
    assert not rep.ok and rep.first_bad == first_bad, (rep.first_bad, rep.reason)


def _catalog_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The catalog's file, and a copy of it as it is now."""
    db = _db(tmp_path)
    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.execute(f"VACUUM INTO '{old}'")
    con.close()
    return db, old


def _put_back(sr: Strongroom, db: Path, old: Path) -> None:
    """Replace the catalog with the older copy (the session's pooled connections let go first)."""
    log = sr._session.audit_log()
    assert log is not None
    log.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(old, db)


def test_rollback_to_older_copy_is_caught_and_exit_1(logged: Strongroom, tmp_path: Path, cli: Cli) -> None:
    db, old = _catalog_copy(tmp_path)
    repo_path = Path(logged._session.settings.repo or "")
    size_then = _verify(repo_path).events
    logged.read("main", "a.txt")
    logged.log()
    _put_back(logged, db, old)
    c = Cli(repo_path, cli.env)
    r = c("audit", "verify")
    assert r.code == 1, r.out + r.err
    assert f"first bad sequence number {size_then}" in r.err and len(r.err.strip().splitlines()) == 1
    # a command on the rolled-back catalog refuses to sign a checkpoint inconsistent with the repository's
    r = c("log")
    assert r.code == 1 and "rolled back" in r.err
    # and the catalog comes back from the repository alone
    r = c("audit", "rebuild")
    assert r.code == 0, r.err
    r = c("audit", "verify")
    assert r.code == 0, r.err


def test_newest_events_dropped_from_catalog_and_repository_alike_are_caught(
    logged: Strongroom, tmp_path: Path, cli: Cli
) -> None:
    """Someone who can write both the catalog and the repository drops the newest events from both
    consistently: what is left is a shorter log that verifies on its own. The client remembers how far it
    sealed, so it is caught, by `audit verify` and by the next command's seal, until `trust-current`."""
    db, old = _catalog_copy(tmp_path)
    repo_path = Path(logged._session.settings.repo or "")
    audit_then = {p for p in (repo_path / "audit").rglob("*") if p.is_file()}
    size_then = _verify(repo_path).covered
    logged.read("main", "a.txt")
    logged.log()
    _put_back(logged, db, old)
    for p in (repo_path / "audit").rglob("*"):
        if p.is_file() and p not in audit_then:
            p.unlink()
    assert _verify(repo_path).ok  # consistent on its own
    c = Cli(repo_path, cli.env)
    r = c("audit", "verify")
    assert r.code == 1, r.out + r.err
    assert f"first bad sequence number {size_then}" in r.err and "newest events were removed" in r.err
    assert "trust-current" in r.err and len(r.err.strip().splitlines()) == 1
    r = c("log")
    assert r.code == 1 and "newest events were removed" in r.err
    r = c("audit", "rebuild")  # the repository lost them too: nothing to put back
    assert r.code == 1 and "trust-current" in r.err and len(r.err.strip().splitlines()) == 1
    assert c("log").code == 1
    r = c("trust-current")
    assert r.code == 0, r.err
    r = c("log")
    assert r.code == 0, r.err
    r = c("audit", "verify")
    assert r.code == 0, r.out + r.err


def test_a_seal_cut_off_after_its_checkpoint_is_taken_by_the_next_command(
    logged: Strongroom, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL between the repository's new checkpoint and the catalog's commit of the rows that record it
    leaves the repository one checkpoint ahead. The catalog holds every event the checkpoint covers, so the
    next command takes it instead of calling the catalog rolled back (found by the crash test, T03)."""
    from strongroom.catalog.auditdb import AuditStore

    repo_path = Path(logged._session.settings.repo or "")

    def killed(self: AuditStore, tx: object, rows: object) -> None:
        raise KeyboardInterrupt  # as SIGKILL there: the catalog's transaction never commits

    with monkeypatch.context() as m:
        m.setattr(AuditStore, "insert_checkpoints", killed)
        with pytest.raises(KeyboardInterrupt):
            Strongroom.open(str(repo_path), PASSPHRASE).log()
    c = Cli(repo_path, cli.env)
    r = c("log")
    assert r.code == 0, r.err
    r = c("audit", "verify")
    assert r.code == 0, r.err
    # The same state with the catalog's newest events gone is a rollback again, and refused.
    with monkeypatch.context() as m:
        m.setattr(AuditStore, "insert_checkpoints", killed)
        with pytest.raises(KeyboardInterrupt):
            Strongroom.open(str(repo_path), PASSPHRASE).log()
    top = sqlite3.connect(_db(tmp_path)).execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    _sql(_db(tmp_path), f"DELETE FROM audit_events WHERE seq={top}")
    r = c("log")
    assert r.code == 1 and "rolled back" in r.err


def test_cli_verify_exit_1_on_edit_then_rebuild(logged: Strongroom, tmp_path: Path, cli: Cli) -> None:
    repo_path = Path(logged._session.settings.repo or "")
    _sql(_db(tmp_path), "UPDATE audit_events SET host='elsewhere' WHERE seq=2")
    c = Cli(repo_path, cli.env)
    r = c("audit", "verify")
    assert r.code == 1 and "first bad sequence number 2" in r.err and "Traceback" not in r.err
    assert c("audit", "rebuild").code == 0
    assert c("audit", "verify").code == 0


def test_rebuild_from_repository_after_losing_the_catalog(logged: Strongroom, tmp_path: Path, cli: Cli) -> None:
    repo_path = Path(logged._session.settings.repo or "")
    before = _verify(repo_path)
    db = _db(tmp_path)
    for p in db.parent.iterdir():
        p.unlink()
    db.write_bytes(b"this is not a database")
    c = Cli(repo_path, cli.env)
    r = c("--json", "audit", "rebuild")
    assert r.code == 0, r.err
    assert json.loads(r.out)["events"] >= before.events
    rep = _verify(repo_path)
    assert rep.ok and rep.events > before.events
    assert rep.log_id == before.log_id


def test_edit_with_a_recomputed_leaf_is_caught_by_the_checkpoint(logged: Strongroom, tmp_path: Path) -> None:
    """An editor who also rewrites the row's recorded leaf (SHA-256 of the edited event, computed outside the
    database) gets past the column check, not past the signed checkpoint."""
    db = _db(tmp_path)
    con = sqlite3.connect(db)
    row = con.execute("SELECT time, os_user, host, action, targets, outcome, details FROM audit_events WHERE seq=7")
    time, os_user, host, action, targets, outcome, details = row.fetchone()
    forged = Event(7, time, "mallory", os_user, host, action, json.loads(targets), outcome, json.loads(details))
    con.execute("UPDATE audit_events SET actor='mallory', leaf=? WHERE seq=7", (forged.leaf_hash(),))
    con.commit()
    con.close()
    rep = _verify(Path(logged._session.settings.repo or ""))
    assert not rep.ok and rep.first_bad == 7 and "signed checkpoint" in rep.reason, rep.reason


def test_prove_refuses_an_edited_event_but_proves_the_others(logged: Strongroom, tmp_path: Path, cli: Cli) -> None:
    """Proofs are built from the leaves recorded at append time (checked against the signed root); the
    event printed comes from the columns and is hashed again, so an edited one cannot get a proof."""
    _sql(_db(tmp_path), "UPDATE audit_events SET actor='mallory' WHERE seq=5")
    c = Cli(Path(logged._session.settings.repo or ""), cli.env)
    r = c("audit", "prove", "5")
    assert r.code == 1 and "Traceback" not in r.err, r.out + r.err
    r = c("audit", "prove", "4")
    assert r.code == 0, r.err
    assert json.loads(r.out)["event"]["actor"] == "carol"
    _sql(_db(tmp_path), "UPDATE audit_events SET leaf=zeroblob(32) WHERE seq=2")  # the recorded tree itself
    r = c("audit", "prove", "4")
    assert r.code == 1 and "does not match its checkpoint" in r.err, r.err


def test_a_segment_deleted_from_the_repository_fails_verify(logged: Strongroom, cli: Cli) -> None:
    """The repository's sealed segments are the copy `audit rebuild` restores from: one deleted is damage,
    named by the first event it held, not a warning."""
    repo_path = Path(logged._session.settings.repo or "")
    files = sorted((p for p in (repo_path / "audit").glob("*/segments/*") if p.is_file()), key=lambda p: p.name)
    assert len(files) >= 3
    victim = files[1]
    first = int(victim.name.split("-")[0])  # segments/<first seq>-<count>-<tag>
    victim.unlink()
    r = Cli(repo_path, cli.env)("audit", "verify")
    assert r.code == 1 and "miss events" in r.err and "Traceback" not in r.err, r.err
    assert f"first bad sequence number {first}" in r.err


@pytest.mark.parametrize("which", ["newest", "all"])
def test_segments_deleted_at_the_end_fail_verify(which: str, logged: Strongroom, tmp_path: Path) -> None:
    """Deleting the newest sealed segment (the last events' only copy in the repository), or all of them, is
    damage too, named by the first event left without its sealed copy."""
    repo_path = Path(logged._session.settings.repo or "")
    files = sorted((p for p in (repo_path / "audit").glob("*/segments/*") if p.is_file()), key=lambda p: p.name)
    victims = files[-1:] if which == "newest" else files
    for victim in victims:
        victim.unlink()
    report = _verify(repo_path)
    assert not report.ok
    assert report.first_bad == int(victims[0].name.split("-")[0])


def test_a_fake_segment_row_in_the_catalog_is_caught(logged: Strongroom, tmp_path: Path) -> None:
    """One row of SQL (no repository access) claiming a segment far ahead made later seals write no segment,
    while checkpoints kept being signed: verify must see that the sealed copy stops short."""
    repo_path = Path(logged._session.settings.repo or "")
    con = sqlite3.connect(_db(tmp_path))
    con.execute("INSERT INTO audit_segments (\"first\", \"count\", object_name) VALUES (1000000, 1, 'x')")
    con.commit()
    con.close()
    before = _verify(repo_path).covered
    logged.read("main", "a.txt")  # sealed under a new checkpoint, without a segment
    report = _verify(repo_path)
    assert not report.ok and report.first_bad == before


@pytest.mark.parametrize("which", ["middle", "newest", "all"])
def test_signed_checkpoints_deleted_from_the_repository_fail_verify(
    which: str, logged: Strongroom, tmp_path: Path
) -> None:
    """The repository's signed checkpoints are what `audit rebuild` trusts: one the catalog recorded writing
    and the repository no longer holds fails the check (nothing deletes them; reencrypt keeps their names)."""
    repo_path = Path(logged._session.settings.repo or "")
    files = sorted((p for p in (repo_path / "audit").glob("*/checkpoints/*") if p.is_file()), key=lambda p: p.name)
    assert len(files) >= 3
    victims = {"middle": files[1:2], "newest": files[-1:], "all": files}[which]
    for victim in victims:
        victim.unlink()
    report = _verify(repo_path)
    assert not report.ok and "lost the signed checkpoint" in report.reason


def test_a_seal_cut_off_after_its_segment_is_completed_by_the_next(
    logged: Strongroom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seal that wrote its segment but not its checkpoint (disk full, a kill) is retried by the next
    command with a longer segment from the same event: the log still verifies and rebuilds."""
    from strongroom.backends import local
    from strongroom.backends.base import BackendError

    real = local.LocalBackend.put

    def put(self: local.LocalBackend, name: str, data: bytes, *args: object, **kwargs: object) -> None:
        if "/checkpoints/" in name:
            raise BackendError("no space left on device (simulated)")
        real(self, name, data, *args, **kwargs)  # type: ignore[arg-type]

    repo_path = Path(logged._session.settings.repo or "")
    with monkeypatch.context() as m:
        m.setattr(local.LocalBackend, "put", put)
        Strongroom.open(str(repo_path), PASSPHRASE).read("main", "a.txt")
    for _ in range(2):  # the retry, then one more segment after it
        Strongroom.open(str(repo_path), PASSPHRASE).read("main", "a.txt")
    firsts = [p.name.split("-")[0] for p in (repo_path / "audit").glob("*/segments/*")]
    assert len(firsts) > len(set(firsts))  # two segments start at the same event
    report = _verify(repo_path)
    assert report.ok, report.reason


# ----------------------------------------------------------------------------- a catalog that holds another log


def _log_head(c: Cli) -> str:
    r = c("--json", "log")
    assert r.code == 0, r.err
    return str(json.loads(r.out)[0]["id"])


def test_a_catalog_made_to_look_like_a_new_log_is_refused_until_rebuilt(
    logged: Strongroom, tmp_path: Path, cli: Cli
) -> None:
    """Someone with SQL access only rewrites history by making the catalog look like a new log: another
    log id, no checkpoints, events of their choosing. The client pinned the log it sealed into this
    catalog, so every command is refused before it does anything, and `audit rebuild` puts the sealed log
    back, without the forged event."""
    repo_path = Path(logged._session.settings.repo or "")
    c = Cli(repo_path, cli.env)
    head = _log_head(c)
    genuine = _verify(repo_path).log_id
    _sql(
        _db(tmp_path),
        "UPDATE audit_meta SET value='00112233445566ff' WHERE key='log_id'",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_segments",
        "UPDATE audit_events SET actor='mallory' WHERE seq=3",
    )
    src = make_tree(tmp_path / "later", {"new.txt": b"made while the catalog was replaced"})
    for args in (("log",), ("audit", "verify"), ("commit", str(src), "-m", "refused")):
        r = c(*args)
        assert r.code == 1, (args, r.out, r.err)
        assert r.err.startswith("strongroom: error: audit log replaced: the catalog holds log 00112233445566ff")
        assert genuine in r.err and "audit rebuild" in r.err and len(r.err.strip().splitlines()) == 1
    r = c("audit", "rebuild")
    assert r.code == 0, r.err
    assert _log_head(c) == head  # the refused commit published nothing
    rep = _verify(repo_path)
    assert rep.ok and rep.log_id == genuine, rep.reason
    actors = {e.actor for e in _events(logged)}
    assert "mallory" not in actors and "carol" in actors


def test_a_lost_catalog_is_refused_until_trusted_and_then_starts_a_new_log(
    logged: Strongroom, tmp_path: Path, cli: Cli
) -> None:
    repo_path = Path(logged._session.settings.repo or "")
    c = Cli(repo_path, cli.env)
    genuine = _verify(repo_path).log_id
    for p in _db(tmp_path).parent.iterdir():
        p.unlink()
    r = c("log")
    assert r.code == 1 and "audit log replaced" in r.err, r.err
    r = c("trust-current")
    assert r.code == 0, r.err
    assert c("log").code == 0
    rep = _verify(repo_path)
    assert rep.ok and rep.log_id != genuine and genuine in rep.other_logs, rep.reason


def test_a_client_that_never_sealed_into_a_catalog_takes_its_log_as_found(
    logged: Strongroom, tmp_path: Path, cli: Cli
) -> None:
    """First contact: another state folder (another machine) pins nothing yet, so a new catalog starts a
    new log there, and that client's own pin then guards it."""
    repo_path = Path(logged._session.settings.repo or "")
    env = dict(cli.env, STRONGROOM_STATE_DIR=str(tmp_path / "other-state"))
    c = Cli(repo_path, env)
    assert c("log").code == 0
    assert len(list((tmp_path / "other-state" / "repos").glob("*.audit-*.json"))) == 1
    for p in (tmp_path / "other-state" / "catalogs").iterdir():
        p.unlink()
    r = c("log")
    assert r.code == 1 and "audit log replaced" in r.err, r.err


def test_custody_lists_a_read_whose_consumer_stopped_early(cli: Cli, tmp_path: Path) -> None:
    """`cat | head` delivers plaintext and ends as `failed` (the consumer went away): custody must still list
    that read, with its outcome, rather than say nobody read the file."""
    import subprocess
    import sys

    src = make_tree(tmp_path / "src", {"secret.bin": b"TOP-SECRET-ROW\n" * 400_000})
    assert cli("init").code == 0
    assert cli("commit", str(src), "-m", "data").code == 0
    env = dict(cli.env, STRONGROOM_PASSPHRASE=PASSPHRASE, STRONGROOM_USER="mallory")
    pipe = f"{sys.executable} -m strongroom --repo {cli.repo} cat main secret.bin | head -c 100000 | wc -c"
    got = subprocess.run(pipe, shell=True, env=env, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "100000"
    res = cli("--json", "custody", "main", "secret.bin")
    assert res.code == 0, res.err
    reads = json.loads(res.out)["files"][0]["reads"]
    assert [(r["actor"].split("@")[0], r["action"], r["outcome"]) for r in reads] == [("mallory", "cat", "failed")]
    text = cli("custody", "main", "secret.bin").out
    assert "read:cat (failed, partial?)" in text
