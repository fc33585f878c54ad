"""Workspaces (issue 4): sparse materialisation, status without reading unchanged files, commit onto the
branch, switch that rewrites only what differs, discard; the original version never changes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.service import workspace as ws
from tests.conftest import PASSPHRASE, Cli, make_tree, tree_snapshot


def wait_out_the_racy_window(folder: Path) -> None:
    """A commit re-reads files changed within a second before its scan (git's racy-clean rule): let the files
    just checked out age past it, as they would in any workspace not committed within the same second."""
    newest = max(p.stat().st_ctime for p in folder.rglob("*"))
    time.sleep(max(0.0, newest + 1.05 - time.time()))


@pytest.fixture
def base(cli: Cli, tmp_path: Path) -> tuple[Path, str]:
    src = make_tree(tmp_path / "src", {
        "images/a.jpg": os.urandom(40_000), "images/b.jpg": os.urandom(50_000),
        "tables/t.csv": b"id,label\n1,cat\n2,dog\n", "README": b"dataset\n",
    })
    assert cli("init").code == 0
    return src, cli("commit", str(src), "-m", "base").out.strip()


def test_workspace_round_trip_never_touches_the_original(cli: Cli, base: tuple[Path, str], tmp_path: Path) -> None:
    src, v1 = base
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "clean").code == 0
    assert {k: v for k, v in tree_snapshot(w).items() if not k.startswith(".strongroom")} == tree_snapshot(src)
    assert cli("status", str(w)).out == ""
    wait_out_the_racy_window(w)
    (w / "tables" / "t.csv").write_bytes(b"id,label\n1,cat\n")
    (w / "images" / "b.jpg").unlink()
    (w / "tables" / "split.csv").write_bytes(b"train\n")
    st = json.loads(cli("--json", "status", str(w)).out)
    assert sorted((c["status"], c["path"]) for c in st["changes"]) == [
        ("added", "tables/split.csv"), ("modified", "tables/t.csv"), ("removed", "images/b.jpg")]
    res = cli("--json", "commit", str(w), "-m", "cleaned")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["branch"] == "clean" and out["parent"] == v1
    assert out["files_read"] == 2  # only the changed and the new file were read
    assert cli("status", str(w)).out == ""
    assert cli("cat", v1, "tables/t.csv").out == "id,label\n1,cat\n2,dog\n"  # the original is untouched
    assert json.loads(cli("--json", "log", "--branch", "main").out)[0]["id"] == v1
    assert ".strongroom-workspace.json" not in cli("ls", "clean").out


def test_sparse_workspace_keeps_the_rest_of_the_version(cli: Cli, base: tuple[Path, str], tmp_path: Path) -> None:
    w = tmp_path / "sparse"
    assert cli("workspace", "create", str(w), "--branch", "tables-only", "--paths", "tables/*").code == 0
    assert sorted(p for p in tree_snapshot(w) if not p.startswith(".strongroom")) == ["tables", "tables/t.csv"]
    (w / "tables" / "t.csv").write_bytes(b"id,label\n")
    assert cli("commit", str(w), "-m", "trim").code == 0
    listed = [line.split("\t")[-1] for line in cli("ls", "tables-only").out.splitlines()]
    assert "images/a.jpg" in listed and "README" in listed  # files outside the sparse paths are kept
    assert cli("cat", "tables-only", "tables/t.csv").out == "id,label\n"


def test_switch_rewrites_only_differing_files(cli: Cli, base: tuple[Path, str], tmp_path: Path) -> None:
    src, v1 = base
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "work")
    (w / "README").write_bytes(b"changed\n")
    v2 = json.loads(cli("--json", "commit", str(w)).out)["id"]
    untouched = (w / "images" / "a.jpg").stat().st_ino
    res = json.loads(cli("--json", "workspace", "switch", str(w), v1).out)
    assert res["bytes_written"] == len(b"dataset\n")
    assert (w / "images" / "a.jpg").stat().st_ino == untouched
    assert (w / "README").read_bytes() == b"dataset\n"
    cli("workspace", "switch", str(w), v2)
    assert (w / "README").read_bytes() == b"changed\n"
    cli("workspace", "switch", str(w), v1)
    assert {k: v for k, v in tree_snapshot(w).items() if not k.startswith(".strongroom")} == tree_snapshot(src)


def test_switch_refuses_a_dirty_workspace(cli: Cli, base: tuple[Path, str], tmp_path: Path) -> None:
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "work")
    (w / "README").write_bytes(b"uncommitted\n")
    res = cli("workspace", "switch", str(w), "main")
    assert res.code == 1 and "uncommitted" in res.err
    assert (w / "README").read_bytes() == b"uncommitted\n"


def test_interrupted_switch_is_reported_and_completed(base: tuple[Path, str], tmp_path: Path, repo_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src, v1 = base
    repo = Strongroom.open(str(repo_path), PASSPHRASE)
    session = repo._session
    w = tmp_path / "ws"
    ws.create(session, str(w), "work", None, [])
    (w / "README").write_bytes(b"v2\n")
    (w / "images" / "a.jpg").write_bytes(b"new image")
    v2 = ws.commit(session, str(w), "two", None, 0).id
    calls = {"n": 0}
    real = ws.write_file

    def dying(*args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the user pressed ^C half-way
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "write_file", dying)
    with pytest.raises(KeyboardInterrupt):
        ws.switch(session, str(w), v1)
    monkeypatch.setattr(ws, "write_file", real)
    info, _ = ws.status(session, str(w))
    assert info.interrupted_switch == v1
    with pytest.raises(Exception, match="interrupted switch"):
        ws.commit(session, str(w), "oops", None, 0)
    ws.switch(session, str(w), v1)  # running it again completes it
    assert {k: v for k, v in tree_snapshot(w).items() if not k.startswith(".strongroom")} == tree_snapshot(src)
    assert ws.status(session, str(w))[0].interrupted_switch is None
    assert v2


def test_discard_and_missing_folder(cli: Cli, base: tuple[Path, str], tmp_path: Path) -> None:
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "work")
    assert cli("workspace", "discard", str(w)).code == 0
    assert not w.exists()
    gone = cli("status", str(w))
    assert gone.code == 2 and "missing" in gone.err
    plain = cli("status", str(tmp_path / "src"))
    assert plain.code == 2 and "not a workspace" in plain.err
