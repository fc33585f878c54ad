"""Workspaces at their edges: a folder replaced by a file, empty folders, resuming a switch without touching the
user's files, a commit interrupted after the branch moved, ignore rules, sparse workspaces, FIFOs, bad input."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.core.model import Entry
from strongroom.errors import CannotWrite, InputError
from strongroom.service import workspace as ws
from strongroom.service.context import Session
from strongroom.service.results import CommitSummary
from tests.conftest import PASSPHRASE, Cli, CliResult, make_tree, tree_snapshot

META = ".strongroom-workspace.json"


def files_of(folder: Path) -> dict[str, tuple[str, bytes | str, int]]:
    return {k: v for k, v in tree_snapshot(folder).items() if not k.startswith(".strongroom-workspace")}


def listed(cli: Cli, version: str) -> set[str]:
    return {e["path"] for e in json.loads(cli("--json", "ls", version).out)}


def changes(cli: Cli, folder: Path) -> list[tuple[str, str]]:
    res = cli("--json", "status", str(folder))
    assert res.code == 0, res.err
    return sorted((c["status"], c["path"]) for c in json.loads(res.out)["changes"])


def branches(cli: Cli) -> set[str]:
    return {line.split("\t")[0] for line in cli("branch", "list").out.splitlines()}


def commit(cli: Cli, folder: Path, message: str) -> str:
    res = cli("--json", "commit", str(folder), "-m", message)
    assert res.code == 0, res.err
    return str(json.loads(res.out)["id"])


def test_switch_replaces_a_folder_with_a_file_and_a_link(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a/b": b"one\n", "d/x": b"x\n", "k": b"keep\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    before = tree_snapshot(src)
    shutil.rmtree(src / "a")
    shutil.rmtree(src / "d")
    (src / "a").write_bytes(b"file\n")
    os.symlink("k", src / "d")
    v2 = commit(cli, src, "v2")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "feat", "--from", v1).code == 0
    res = cli("workspace", "switch", str(w), v2)
    assert res.code == 0, res.err
    assert files_of(w) == tree_snapshot(src)
    assert cli("status", str(w)).out == ""
    res = cli("workspace", "switch", str(w), v1)  # and back: the file and the link become folders again
    assert res.code == 0, res.err
    assert files_of(w) == before


def test_switch_refuses_to_replace_a_folder_holding_files_of_neither_version(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a/b": b"one\n", ".strongroomignore": b"*.tmp\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    shutil.rmtree(src / "a")
    (src / "a").write_bytes(b"file\n")
    v2 = commit(cli, src, "v2")
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "feat", "--from", v1)
    (w / "a" / "scratch.tmp").write_bytes(b"ignored, but mine\n")  # ignored: status is clean
    assert cli("status", str(w)).out == ""
    res = cli("workspace", "switch", str(w), v2)
    assert res.code == 1 and "internal error" not in res.err
    assert str(w / "a") in res.err and len(res.err.strip().splitlines()) == 1
    assert (w / "a" / "b").read_bytes() == b"one\n"  # nothing was changed
    assert (w / "a" / "scratch.tmp").read_bytes() == b"ignored, but mine\n"
    assert json.loads(cli("--json", "status", str(w)).out)["workspace"]["interrupted_switch"] is None
    (w / "a" / "scratch.tmp").unlink()
    assert cli("workspace", "switch", str(w), v2).code == 0
    assert (w / "a").read_bytes() == b"file\n"


def test_empty_folders_are_switched_committed_and_shown_by_status(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"data/x": b"one\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    (src / "outputs" / "empty").mkdir(parents=True)
    (src / "outputs" / "empty").chmod(0o750)
    (src / "data" / "x").write_bytes(b"two\n")
    commit(cli, src, "v2 with an empty folder")
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "main")
    assert cli("workspace", "switch", str(w), v1).code == 0
    assert cli("workspace", "switch", str(w), "main").code == 0
    assert files_of(w) == tree_snapshot(src)  # the empty folder, with its mode
    assert cli("status", str(w)).out == ""
    (w / "data" / "x").write_bytes(b"three\n")
    v3 = commit(cli, w, "edit x")
    assert "outputs/empty" in listed(cli, v3)  # not dropped by the next commit
    (w / "my_new_folder").mkdir()
    assert changes(cli, w) == [("added", "my_new_folder")]
    res = cli("workspace", "switch", str(w), v1)
    assert res.code == 1 and "uncommitted" in res.err
    assert (w / "my_new_folder").is_dir()
    (w / "my_new_folder").rmdir()
    (w / "outputs" / "empty").rmdir()
    assert changes(cli, w) == [("removed", "outputs/empty")]
    assert cli("workspace", "switch", str(w), v3).code == 1
    (w / "outputs" / "empty").mkdir()
    (w / "outputs" / "empty").chmod(0o750)  # with another mode it would be a change too
    assert cli("workspace", "switch", str(w), v1).code == 0
    assert not (w / "outputs").exists()


def test_resuming_an_interrupted_switch_keeps_the_users_files(
    cli: Cli, tmp_path: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", {"k": b"k\n", "notes.txt": b"notes\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    (src / "big").write_bytes(os.urandom(200_000))
    (src / "k").write_bytes(b"k2\n")
    v2 = commit(cli, src, "v2")
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "feat", "--from", v1)
    session = Strongroom.open(str(repo_path), PASSPHRASE)._session

    def killed_half_way(repo: object, path: bytes, entry: Entry, *rest: object) -> None:
        with open(path, "wb") as f:
            f.write(b"the first bytes only")
        raise KeyboardInterrupt  # killed while the file was being written

    monkeypatch.setattr(ws, "write_file", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        ws.switch(session, str(w), v2)
    monkeypatch.undo()
    (w / "notes.txt").write_bytes(b"notes\nmy important edit\n")  # the user goes on working meanwhile
    (w / "results.csv").write_bytes(b"a,b\n")
    for i in range(10):
        (w / f"r{i:02}").write_bytes(b"mine\n")
    res = cli("workspace", "switch", str(w), v2)
    assert res.code == 1 and "internal error" not in res.err
    assert "12 path(s)" in res.err  # how many, and at most 10 of them by name
    assert sum(name in res.err for name in ["notes.txt", "results.csv"] + [f"r{i:02}" for i in range(10)]) == 10
    assert (w / "notes.txt").read_bytes() == b"notes\nmy important edit\n"
    assert (w / "results.csv").read_bytes() == b"a,b\n"
    assert (w / "r09").exists()
    (w / "notes.txt").write_bytes(b"notes\n")
    for name in ["results.csv"] + [f"r{i:02}" for i in range(10)]:
        (w / name).unlink()
    res = cli("workspace", "switch", str(w), v2)  # the half-written file is the switch's own: completed
    assert res.code == 0, res.err
    assert files_of(w) == tree_snapshot(src)
    assert cli("status", str(w)).out == ""


def killed_after_publishing(session: Session, folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A workspace commit killed (^C) after the branch names the new version, before the workspace's metadata
    says so. Returns the version."""
    published: list[str] = []

    def commit_then_die(*args: Any, **kwargs: Any) -> CommitSummary:
        published.append(real(*args, **kwargs).id)
        raise KeyboardInterrupt

    real = ws.commit_version
    monkeypatch.setattr(ws, "commit_version", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        ws.commit(session, str(folder), "interrupted", None, 0)
    monkeypatch.setattr(ws, "commit_version", real)
    return published[0]


def test_a_commit_interrupted_after_the_branch_moved_is_adopted(
    cli: Cli, tmp_path: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", {"k": b"k\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    w, other = tmp_path / "ws", tmp_path / "other"
    cli("workspace", "create", str(w), "--branch", "feat")
    cli("workspace", "create", str(other), "--branch", "feat")
    session = Strongroom.open(str(repo_path), PASSPHRASE)._session
    (w / "k").write_bytes(b"edit\n")
    v2 = killed_after_publishing(session, w, monkeypatch)
    st = json.loads(cli("--json", "status", str(w)).out)
    assert st["changes"] == [] and st["workspace"]["base"] == v2 and st["workspace"]["adopted"] == v2
    assert json.loads(cli("--json", "status", str(w)).out)["workspace"]["adopted"] is None  # said once
    # Another workspace of the branch did not make that version: it is not adopted there.
    (other / "k").write_bytes(b"theirs\n")
    assert json.loads(cli("--json", "status", str(other)).out)["workspace"]["base"] == v1
    res = cli("commit", str(other), "-m", "theirs")
    assert res.code == 1 and "branch moved" in res.err
    (w / "k").write_bytes(b"edit 2\n")
    res = cli("--json", "commit", str(w), "-m", "c3")
    assert res.code == 0, res.err
    assert json.loads(res.out)["parent"] == v2


def test_commit_and_switch_adopt_an_interrupted_commit(
    cli: Cli, tmp_path: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", {"k": b"k\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "feat")
    session = Strongroom.open(str(repo_path), PASSPHRASE)._session
    (w / "k").write_bytes(b"edit\n")
    v2 = killed_after_publishing(session, w, monkeypatch)
    res = cli("workspace", "switch", str(w), v1)
    assert res.code == 0, res.err
    assert (w / "k").read_bytes() == b"k\n"
    res = cli("workspace", "switch", str(w), v2)  # back: v1 stays the base of a workspace switched to it
    assert res.code == 0, res.err
    assert (w / "k").read_bytes() == b"edit\n"
    (w / "k").write_bytes(b"edit 2\n")
    v3 = killed_after_publishing(session, w, monkeypatch)
    (w / "k").write_bytes(b"edit 3\n")
    res = cli("--json", "commit", str(w), "-m", "c4")
    assert res.code == 0, res.err
    assert json.loads(res.out)["parent"] == v3


def test_status_applies_the_ignore_rules_of_commit(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"k": b"k\n", ".strongroomignore": b"*.tmp\nbuild/\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "main")
    (w / "cache.tmp").write_bytes(b"scratch\n")
    make_tree(w / "build", {"out.o": b"\0"})
    assert cli("status", str(w)).out == ""
    assert cli("workspace", "switch", str(w), v1).code == 0
    v2 = commit(cli, w, "c")
    assert listed(cli, v2) == {"k", ".strongroomignore"}
    assert cli("status", str(w)).out == ""


def test_sparse_workspace_tracks_files_committed_outside_its_paths(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"tables/t.csv": b"t\n", "images/i.png": b"i\n"})
    assert cli("init").code == 0
    commit(cli, src, "v1")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "feat", "--paths", "tables/*").code == 0
    (w / "NOTES.txt").write_bytes(b"my notes\n")
    (w / "drafts").mkdir()
    v2 = commit(cli, w, "add notes")
    assert {"NOTES.txt", "drafts", "images/i.png"} <= listed(cli, v2)
    assert cli("status", str(w)).out == ""  # committed: no longer "added"
    (w / "NOTES.txt").unlink()
    (w / "drafts").rmdir()
    assert changes(cli, w) == [("removed", "NOTES.txt"), ("removed", "drafts")]
    v3 = commit(cli, w, "remove notes")
    assert listed(cli, v3) == {"tables", "tables/t.csv", "images", "images/i.png"}
    assert cli("status", str(w)).out == ""
    (w / "NOTES.txt").write_bytes(b"again\n")
    v4 = commit(cli, w, "notes again")
    res = cli("workspace", "switch", str(w), "feat")
    assert res.code == 0, res.err
    assert cli("status", str(w)).out == ""
    assert cli("cat", "feat", "NOTES.txt").out == "again\n"
    assert (w / "NOTES.txt").read_bytes() == b"again\n"  # switching to what it holds keeps what it tracks
    assert cli("workspace", "switch", str(w), v3).code == 0  # a version without it: gone, and untracked
    assert not (w / "NOTES.txt").exists() and cli("status", str(w)).out == ""
    assert cli("workspace", "switch", str(w), v4).code == 0  # back: the view is the globs again
    assert cli("status", str(w)).out == ""


def test_status_and_switch_skip_a_fifo(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"k": b"k\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "feat")
    os.mkfifo(w / "pipe")
    res = cli("status", str(w), timeout=20)  # used to block forever opening the FIFO
    assert res.code == 0 and res.out == ""
    assert cli("workspace", "switch", str(w), v1, timeout=20).code == 0


def test_create_under_a_file_is_bad_input_and_leaves_no_branch(cli: Cli, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"k": b"k\n"})
    assert cli("init").code == 0
    commit(cli, tmp_path / "src", "v1")
    (tmp_path / "afile").write_bytes(b"")
    res = cli("workspace", "create", str(tmp_path / "afile" / "sub"), "--branch", "b4")
    assert res.code == 2 and "internal error" not in res.err
    assert str(tmp_path / "afile" / "sub") in res.err and len(res.err.strip().splitlines()) == 1
    assert "b4" not in branches(cli)


def test_failed_create_leaves_no_branch_behind(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"d/x": b"x\n", "k": b"k\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    (src / "k").write_bytes(b"k2\n")
    v2 = commit(cli, src, "v2")
    res = cli("workspace", "create", str(src), "--branch", "b2", "--from", v2)
    assert res.code == 2 and "not empty" in res.err
    res = cli("workspace", "create", str(tmp_path / "ws3"), "--branch", "b3", "--paths", "nope/*")
    assert res.code == 2 and "nope/*" in res.err
    assert branches(cli) == {"main"}
    assert not (tmp_path / "ws3").exists()
    res = cli("workspace", "create", str(tmp_path / "ws2"), "--branch", "b2", "--from", v1)  # a retry
    assert res.code == 0, res.err
    assert (tmp_path / "ws2" / "k").read_bytes() == b"k\n"


def test_create_deletes_its_branch_when_the_checkout_fails(
    cli: Cli, tmp_path: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "src", {"k": b"k\n"})
    assert cli("init").code == 0
    commit(cli, tmp_path / "src", "v1")
    session = Strongroom.open(str(repo_path), PASSPHRASE)._session

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "ws"))

    monkeypatch.setattr(ws, "restore_checkout", no_space)
    with pytest.raises(CannotWrite, match="No space left"):  # the machine's state: exit 1, not a usage error
        ws.create(session, str(tmp_path / "ws"), "fresh", None, [])
    assert "fresh" not in branches(cli)
    assert not (tmp_path / "ws").exists()


def test_discard_through_a_symlink_is_refused(cli: Cli, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"k": b"k\n"})
    assert cli("init").code == 0
    commit(cli, tmp_path / "src", "v1")
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "feat")
    os.symlink(w, tmp_path / "link")
    res = cli("workspace", "discard", str(tmp_path / "link"))
    assert res.code == 2 and "symbolic link" in res.err
    assert (w / "k").read_bytes() == b"k\n" and (tmp_path / "link").is_symlink()
    assert cli("workspace", "discard", str(w)).code == 0


def test_a_refused_commit_is_not_adopted_later(
    cli: Cli, tmp_path: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workspace switched back to an older version of its branch: its commit is refused (branch moved).
    A later status must not take the branch head, made here before the switch, for an interrupted commit of
    this folder: the folder does not hold it, and the next commit would silently revert it."""
    src = make_tree(tmp_path / "src", {"a": b"a0\n", "b": b"b0\n"})
    assert cli("init").code == 0
    commit(cli, src, "base")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "dev").code == 0
    b0 = json.loads(cli("--json", "status", str(w)).out)["workspace"]["base"]
    (w / "a").write_bytes(b"a1\n")
    v1 = commit(cli, w, "v1")
    assert cli("workspace", "switch", str(w), b0).code == 0
    (w / "b").write_bytes(b"my edit\n")
    res = cli("commit", str(w), "-m", "edit on b0")
    assert res.code == 1 and "branch moved" in res.err
    st = json.loads(cli("--json", "status", str(w)).out)
    assert st["workspace"]["base"] == b0 and st["workspace"]["adopted"] is None
    assert [(c["status"], c["path"]) for c in st["changes"]] == [("modified", "b")]
    assert (
        cli("cat", "dev", "a").out == "a1\n" and json.loads(cli("--json", "log", "--branch", "dev").out)[0]["id"] == v1
    )


def test_a_second_commit_during_a_commit_leaves_the_workspace_as_the_first_made_it(
    cli: Cli, tmp_path: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commits of one workspace at once: the second used to commit first, the first was then refused
    (branch moved) and wrote back the metadata it had read before, with the old base; the workspace then
    showed the committed edit as uncommitted and refused commit and switch. A commit now holds the workspace:
    the second exits 1 at once, and the first finishes."""
    src = make_tree(tmp_path / "src", {"a": b"v1\n"})
    assert cli("init").code == 0
    commit(cli, src, "v1")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "dev").code == 0
    (w / "big").write_bytes(b"an edit\n")
    session = Strongroom.open(str(repo_path), PASSPHRASE)._session
    second: list[Any] = []

    def another_commit_meanwhile(*args: Any, **kwargs: Any) -> CommitSummary:
        second.append(cli("commit", str(w), "-m", "B"))  # runs to its end while the first one is here
        return real(*args, **kwargs)

    real = ws.commit_version
    monkeypatch.setattr(ws, "commit_version", another_commit_meanwhile)
    first = ws.commit(session, str(w), "A", None, 0)
    monkeypatch.undo()
    assert second[0].code == 1 and "in use" in second[0].err and len(second[0].err.strip().splitlines()) == 1
    head = json.loads(cli("--json", "log", "--branch", "dev").out)[0]
    assert head["id"] == first.id and head["message"] == "A"
    assert json.loads((w / META).read_text())["base"] == first.id
    assert changes(cli, w) == []
    (w / "a").write_bytes(b"v2\n")
    assert commit(cli, w, "again")
    assert cli("workspace", "switch", str(w), first.id).code == 0


def test_switch_keeps_files_and_folders_named_like_its_temporary_files(cli: Cli, tmp_path: Path) -> None:
    """The switch wrote each file as `.strongroom-partial` in its folder: a user's file of that name was deleted,
    and a folder of that name made the switch crash. Its temporary names are now unique and made exclusively."""
    src = make_tree(tmp_path / "src", {
        "x/.strongroom-partial": b"user data\n", "x/f": b"v1\n", "y/.strongroom-partial/keep": b"k\n", "y/g": b"v1\n",
    })
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    make_tree(src, {"x/f": b"v2\n", "y/g": b"v2\n"})
    v2 = commit(cli, src, "v2")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "dev", "--from", v1).code == 0
    res = cli("workspace", "switch", str(w), v2)
    assert res.code == 0, res.err
    assert files_of(w) == tree_snapshot(src)
    assert changes(cli, w) == []
    assert cli("workspace", "switch", str(w), v1).code == 0
    assert (w / "x" / ".strongroom-partial").read_bytes() == b"user data\n" and (w / "x" / "f").read_bytes() == b"v1\n"


def as_a_user(cli: Cli, *args: str) -> CliResult:
    """The CLI as an ordinary user runs it: as root, without the capabilities that override file permissions."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            if os.environ.get("CI"):
                pytest.fail("setpriv (util-linux) is needed to run without root's permission override")
            pytest.skip("setpriv (util-linux) is needed to run without root's permission override")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    env = dict(cli.env, STRONGROOM_PASSPHRASE=PASSPHRASE)
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "strongroom", "--repo", str(cli.repo), *args],
        env=env, capture_output=True, timeout=120,
    )
    return CliResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode(), proc.stdout)


def test_switch_and_discard_handle_read_only_folders(cli: Cli, tmp_path: Path) -> None:
    """A version's folder of mode 0555: switch crashed writing in it (internal error, and the switch could never
    complete), discard crashed removing it. Now the folder is made writable meanwhile and gets its mode back."""
    src = make_tree(tmp_path / "src", {"frozen/f": b"v1\n", "frozen/sub/g": b"g\n", "other": b"o\n"})
    for d in ("frozen/sub", "frozen"):
        os.chmod(src / d, 0o555)
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    v1_tree = tree_snapshot(src)
    for d in ("frozen", "frozen/sub"):
        os.chmod(src / d, 0o755)
    shutil.rmtree(src / "frozen" / "sub")
    make_tree(src, {"frozen/f": b"v2\n", "frozen/new/h": b"h\n"})
    os.chmod(src / "frozen" / "new", 0o555)
    os.chmod(src / "frozen", 0o555)
    v2 = commit(cli, src, "v2")
    w = tmp_path / "ws"
    assert as_a_user(cli, "workspace", "create", str(w), "--branch", "dev", "--from", v1).code == 0
    assert files_of(w) == v1_tree
    res = as_a_user(cli, "workspace", "switch", str(w), v2)
    assert res.code == 0, res.err
    assert files_of(w) == tree_snapshot(src)  # contents and folder modes
    assert as_a_user(cli, "status", str(w)).out == ""
    res = as_a_user(cli, "workspace", "switch", str(w), v1)
    assert res.code == 0, res.err
    assert files_of(w) == v1_tree
    res = as_a_user(cli, "workspace", "discard", str(w))
    assert res.code == 0, res.err
    assert not w.exists()


@pytest.mark.parametrize(("error", "raised"), [(errno.ENOSPC, CannotWrite), (errno.EACCES, InputError)])
def test_a_switch_that_cannot_write_names_the_path_and_completes_when_run_again(
    cli: Cli, tmp_path: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, raised: type[Exception]
) -> None:
    """A full disk is the machine's state (exit 1); a folder that is not yours is for the user to fix (exit 2)."""
    src = make_tree(tmp_path / "src", {"d/k": b"k\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    (src / "d" / "k").write_bytes(b"k2\n")
    v2 = commit(cli, src, "v2")
    w = tmp_path / "ws"
    cli("workspace", "create", str(w), "--branch", "feat", "--from", v1)
    session = Strongroom.open(str(repo_path), PASSPHRASE)._session

    def refused(repo: object, path: bytes, *rest: object) -> None:
        raise OSError(error, os.strerror(error), path)

    monkeypatch.setattr(ws, "write_file", refused)
    with pytest.raises(raised, match=f"switch stopped at {w}/d/.strongroom-partial-.*: {os.strerror(error)}"):
        ws.switch(session, str(w), v2)
    monkeypatch.undo()
    res = cli("workspace", "switch", str(w), v2)
    assert res.code == 0, res.err
    assert files_of(w) == tree_snapshot(src)


def test_status_reports_a_folder_whose_mode_changed(cli: Cli, tmp_path: Path) -> None:
    """status said 'no changes' for a folder whose mode changed, and commit then made a new version of it."""
    src = make_tree(tmp_path / "src", {"sub/b": b"b\n"})
    os.chmod(src / "sub", 0o755)
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "dev").code == 0
    os.chmod(w / "sub", 0o700)
    assert changes(cli, w) == [("modified", "sub")]
    res = cli("workspace", "switch", str(w), v1)
    assert res.code == 1 and "1 uncommitted change" in res.err
    v2 = commit(cli, w, "chmod 700 sub")
    assert {e["path"]: e["mode"] for e in json.loads(cli("--json", "ls", v2).out)}["sub"] == "0o700"
    assert changes(cli, w) == []


def test_a_switched_or_sparse_workspace_commits_the_version_it_shows(cli: Cli, tmp_path: Path) -> None:
    """status said 'no changes' after a switch, yet the commit made a new tree: the files written into the
    folders had moved the folders' mtimes, which a version records. The same for the folders a sparse
    workspace makes itself."""
    src = make_tree(tmp_path / "src", {"d/a": b"a\n", "d/e/b": b"b\n", "f/g": b"g\n"})
    assert cli("init").code == 0
    commit(cli, src, "v1")
    (src / "d" / "a").write_bytes(b"a2\n")
    (src / "d" / "e" / "c").write_bytes(b"c\n")
    os.mkdir(src / "d" / "new")
    commit(cli, src, "v2")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "feat", "--from", "main~1").code == 0
    assert cli("merge", "main", "--into", "feat").code == 0  # feat moves on without the workspace
    assert cli("workspace", "switch", str(w), "feat").code == 0
    assert changes(cli, w) == []
    res = cli("--json", "commit", str(w), "-m", "nothing new")
    assert res.code == 0, res.err
    assert json.loads(res.out)["unchanged"] is True

    sparse = tmp_path / "sparse"
    assert cli("workspace", "create", str(sparse), "--branch", "sp", "--paths", "d/e/*").code == 0
    res = cli("--json", "commit", str(sparse), "-m", "nothing new")
    assert res.code == 0, res.err
    assert json.loads(res.out)["unchanged"] is True
