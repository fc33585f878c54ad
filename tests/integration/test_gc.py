"""gc (issue 4): keeps everything reachable, frees what is not, refuses when data is missing, and never
deletes while readers or commits hold shared locks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, injected_kill, make_tree


def _stored(cli: Cli) -> int:
    return int(json.loads(cli("--json", "stats").out)["stored_bytes"])


def _lock(repo: Path, name: str, pid: int) -> Path:
    path = repo / "locks" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "time_ns": time.time_ns(), "command": "t"}))
    return path


@pytest.fixture
def unreachable(cli: Cli, tmp_path: Path) -> Path:
    """main: v0 (a) → v1 (a, b, c); branch x from v0 gets c too; main is reset to x, so v1 and b die, while c
    (stored in v1's pack next to b) stays live: gc must repack, not just delete."""
    src = make_tree(tmp_path / "src", {"a": os.urandom(300_000)})
    assert cli("init").code == 0
    assert cli("commit", str(src), "-m", "v0").code == 0
    assert cli("branch", "create", "x").code == 0
    (src / "b").write_bytes(os.urandom(900_000))
    c = os.urandom(700_000)
    (src / "c").write_bytes(c)
    assert cli("commit", str(src), "-m", "v1").code == 0
    other = make_tree(tmp_path / "other", {"a": (src / "a").read_bytes(), "c": c})
    assert cli("commit", str(other), "-b", "x", "-m", "x1").code == 0
    assert cli("reset", "main", "x").code == 0
    return src


def test_recent_unreachable_versions_are_kept(cli: Cli, unreachable: Path) -> None:
    before = _stored(cli)
    res = json.loads(cli("--json", "gc").out)
    assert res["objects_removed"] == 0 and _stored(cli) == before


def _data_state(repo_path: Path) -> dict[str, bytes]:
    """Packs, index files and refs: what gc could change (every command also appends audit objects)."""
    paths = [*(repo_path / "data").rglob("*"), *(repo_path / "index").rglob("*"), repo_path / "refs"]
    return {str(p.relative_to(repo_path)): p.read_bytes() for p in paths if p.is_file()}


def test_dry_run_changes_nothing(cli: Cli, unreachable: Path, repo_path: Path) -> None:
    before = _data_state(repo_path)
    res = json.loads(cli("--json", "gc", "--keep-unreachable", "0", "--dry-run").out)
    assert res["dry_run"] and res["objects_removed"] > 0 and res["bytes_freed"] == 0
    assert _data_state(repo_path) == before


def test_gc_frees_unreachable_data_and_keeps_the_rest_readable(cli: Cli, unreachable: Path, tmp_path: Path) -> None:
    before = _stored(cli)
    res = json.loads(cli("--json", "gc", "--keep-unreachable", "0").out)
    assert res["packs_repacked"] >= 1  # c shared a pack with the dead b
    assert res["bytes_freed"] >= 900_000
    assert _stored(cli) <= before - 900_000
    assert cli("verify", "--full").code == 0
    out = tmp_path / "out"
    assert cli("checkout", "main", str(out)).code == 0
    assert (out / "c").read_bytes() == (unreachable / "c").read_bytes()
    # the file cache must not trust chunks gc removed: committing the old folder again re-reads b
    assert cli("commit", str(unreachable), "-m", "again").code == 0
    assert cli("verify", "--full").code == 0


def test_gc_refuses_when_data_is_missing(cli: Cli, unreachable: Path, repo_path: Path) -> None:
    packs = sorted((p for p in (repo_path / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    packs[-1].unlink()  # the largest pack holds live chunks
    left = sorted(p.name for p in (repo_path / "data").rglob("*"))
    res = cli("gc", "--keep-unreachable", "0")
    assert res.code == 1 and "missing" in res.err
    assert sorted(p.name for p in (repo_path / "data").rglob("*")) == left  # nothing deleted


def test_gc_after_losing_every_index_file_rebuilds_from_pack_headers(
    cli: Cli, unreachable: Path, repo_path: Path
) -> None:
    for f in (repo_path / "index").iterdir():
        f.unlink()
    assert cli("gc", "--keep-unreachable", "0").code == 0
    assert cli("verify", "--full").code == 0


def test_gc_waits_for_readers_and_readers_wait_for_gc(
    cli: Cli, unreachable: Path, repo_path: Path, tmp_path: Path
) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        reader = _lock(repo_path, "read-0123456789abcdef", sleeper.pid)
        held = cli("gc", "--keep-unreachable", "0")
        assert held.code == 1 and str(sleeper.pid) in held.err
        assert cli("verify", "--full").code == 0
        reader.unlink()
        gc_lock = _lock(repo_path, "exclusive", sleeper.pid)
        blocked = cli("checkout", "main", str(tmp_path / "o"))
        assert blocked.code == 1 and str(sleeper.pid) in blocked.err
        gc_lock.unlink()
    finally:
        sleeper.kill()
        sleeper.wait()
    # a reader lock left by a dead process does not block gc
    _lock(repo_path, "read-fedcba9876543210", sleeper.pid)
    assert cli("gc", "--keep-unreachable", "0").code == 0
    assert cli("verify", "--full").code == 0


def test_a_writer_whose_index_predates_a_gc_stores_again_what_gc_freed(
    cli: Cli, unreachable: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that loaded the index (to resolve versions, or for a scope or a sparse workspace) before a gc
    ran must not deduplicate against what that gc deleted: under its reader's lock it reloads the index."""
    from strongroom import Strongroom
    from tests.conftest import PASSPHRASE

    writer = Strongroom.open(str(cli.repo), PASSPHRASE)
    writer.resolve("main~1")  # loads the index while b (of the unreachable v1) is still stored
    assert cli("gc", "--keep-unreachable", "0").code == 0  # b's chunks are deleted
    again = make_tree(tmp_path / "again", {"b": (unreachable / "b").read_bytes()})
    writer.commit(str(again), message="b once more", branch="main")
    assert cli("verify", "--full").code == 0
    out = tmp_path / "out"
    assert cli("checkout", "main", str(out)).code == 0
    assert (out / "b").read_bytes() == (unreachable / "b").read_bytes()


def _temporaries(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for p in repo.rglob("*.tmp*-*") if p.is_file()}


def _structure_notes(cli: Cli) -> list[str]:
    """`verify --structure` (keyless) on a repository whose only findings are temporary files: exit 0, notes."""
    res = cli("--json", "verify", "--structure", passphrase=None)
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["ok"] and doc["damage"] == [], doc
    return [w for w in doc["warnings"] if "temporary file" in w]


def test_gc_removes_the_temporary_files_of_killed_writes(cli: Cli, tmp_path: Path) -> None:
    """Commits SIGKILLed just before renaming a pack or an index file into place, or linking the publish lock,
    leave their temporary files (<name>.tmp<pid>-<random>) in data/, index/ and locks/. verify --structure names
    them in notes (exit 0); gc removes them once nothing has written to them for an hour and their process is
    gone (their names carry a PID but not the host), counts them in its report, and keeps the rest."""
    src = make_tree(tmp_path / "src", {"a": os.urandom(50_000)})
    assert cli("init").code == 0
    assert cli("commit", str(src), "-m", "v1").code == 0
    repo = cli.repo
    for n, (call, folder) in enumerate((("replace", "data"), ("replace", "index"), ("link", "locks/publish"))):
        (src / f"new{n}").write_bytes(os.urandom(50_000))
        hook = injected_kill(tmp_path / f"hook{n}", f"os:{call}", "before", first_arg=str(repo / folder))
        killed = cli("commit", str(src), "-m", "killed", extra_env=hook)
        assert killed.code == -signal.SIGKILL, killed.err
    left = _temporaries(repo)
    assert {name.split("/")[0] for name in left} == {"data", "index", "locks"} and len(left) == 3, left
    assert len(_structure_notes(cli)) == 3
    # Younger than an hour: a write may still be under way (on another host, for all the name says).
    res = cli("--json", "gc")
    assert res.code == 0 and json.loads(res.out)["temporaries_removed"] == 0, res.err
    assert _temporaries(repo) == left
    two_hours_ago = time.time() - 7200
    for name in left:
        os.utime(repo / name, (two_hours_ago, two_hours_ago))
    # An old one whose PID runs here is kept: it may be a writer that was stopped.
    alive = repo / "data" / f"{'0' * 64}.tmp{os.getpid()}-0badf00d"
    alive.parent.mkdir(exist_ok=True)
    alive.write_bytes(b"x")
    os.utime(alive, (two_hours_ago, two_hours_ago))
    notes = _structure_notes(cli)
    assert sorted(n.split(":")[0] for n in notes) == sorted([*left, str(alive.relative_to(repo))])
    assert sum("left by a write that was killed" in n for n in notes) == 3, notes
    res = cli("--json", "gc", "--dry-run")
    assert res.code == 0 and json.loads(res.out)["temporaries_removed"] == 3, res.err
    assert _temporaries(repo) == {*left, str(alive.relative_to(repo))}
    res = cli("gc")
    assert res.code == 0 and "removed 3 temporary files left by writes that were killed" in res.out, res.out
    assert _temporaries(repo) == {str(alive.relative_to(repo))}
    alive.unlink()
    assert _structure_notes(cli) == []
    assert cli("verify", "--full").code == 0
    assert cli("commit", str(src), "-m", "v2").code == 0
    assert cli("checkout", "main", str(tmp_path / "out")).code == 0
    assert (tmp_path / "out" / "new2").read_bytes() == (src / "new2").read_bytes()
