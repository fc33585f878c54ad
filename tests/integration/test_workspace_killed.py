"""Workspace create and discard killed (SIGKILL) half way: what is left says so, and running the same command
again (or a discard) finishes it. The kill lands inside a real `strongroom` process (conftest.injected_kill)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
from pathlib import Path

from tests.conftest import Cli, injected_kill, make_tree, tree_snapshot

META = ".strongroom-workspace.json"


def files_of(folder: Path) -> dict[str, tuple[str, bytes | str, int]]:
    return {k: v for k, v in tree_snapshot(folder).items() if not k.startswith(".strongroom-workspace")}


def commit(cli: Cli, folder: Path, message: str) -> str:
    res = cli("--json", "commit", str(folder), "-m", message)
    assert res.code == 0, res.err
    return str(json.loads(res.out)["id"])


def changes(cli: Cli, folder: Path) -> list[tuple[str, str]]:
    res = cli("--json", "status", str(folder))
    assert res.code == 0, res.err
    return sorted((c["status"], c["path"]) for c in json.loads(res.out)["changes"])


def heads(cli: Cli) -> dict[str, str]:
    return {b["name"]: b["version"] for b in json.loads(cli("--json", "branch", "list").out)}


def _workspace(cli: Cli, tmp_path: Path) -> Path:
    """A repository with one version (one file, `a`) and a workspace of it on a new branch `feat`."""
    src = make_tree(tmp_path / "src", {"a": b"a\n"})
    assert cli("init").code == 0
    commit(cli, src, "v1")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "feat").code == 0
    return w


def killed_create(cli: Cli, tmp_path: Path, folder: Path, *args: str) -> None:
    """`workspace create FOLDER ARGS` killed (SIGKILL) as it starts writing its third file."""
    kill = injected_kill(tmp_path / "kill", "strongroom.store.restore:write_file", at=3)
    res = cli("workspace", "create", str(folder), *args, extra_env=kill)
    assert res.code == -signal.SIGKILL, res.err
    assert len(files_of(folder)) > 1


def test_a_create_killed_during_its_checkout_is_completed_by_running_it_again(cli: Cli, tmp_path: Path) -> None:
    """A create killed half way leaves a folder that says so: status, commit and switch name the commands that
    finish it; running the same create again removes what the killed one wrote (a file it was writing included)
    and checks the version out again, but first refuses anything in the folder that is not of the version."""
    src = make_tree(tmp_path / "src", {**{f"d/f{i}": b"%d\n" % i for i in range(6)}, "k": b"k\n"})
    assert cli("init").code == 0
    v1 = commit(cli, src, "v1")
    w = tmp_path / "ws"
    killed_create(cli, tmp_path, w, "--branch", "feat")
    assert heads(cli)["feat"] == v1
    for res in (cli("status", str(w)), cli("commit", str(w), "-m", "part"), cli("workspace", "switch", str(w), v1)):
        assert res.code == 1 and len(res.err.strip().splitlines()) == 1, res.err
        assert f"the creation of workspace {w} was interrupted" in res.err
        assert f"`strongroom workspace create {w} --branch feat` again" in res.err, res.err
    assert heads(cli)["feat"] == v1
    res = cli("workspace", "create", str(w), "--branch", "other")
    assert res.code == 2 and "--branch feat" in res.err and "other" not in heads(cli)
    half = next(p for p in sorted(w.rglob("f*")) if p.is_file())
    half.write_bytes(half.read_bytes()[:1])  # as a file the kill cut off
    (w / "d" / "mine").write_bytes(b"mine\n")
    res = cli("workspace", "create", str(w), "--branch", "feat")
    assert res.code == 1 and "d/mine" in res.err and "run the create again" in res.err, res.err
    assert (w / "d" / "mine").read_bytes() == b"mine\n"
    (w / "d" / "mine").unlink()
    res = cli("workspace", "create", str(w), "--branch", "feat")
    assert res.code == 0, res.err
    assert files_of(w) == tree_snapshot(src)
    assert changes(cli, w) == [] and heads(cli)["feat"] == v1
    assert "creating" not in json.loads((w / META).read_text())


def test_discarding_a_killed_create_keeps_its_branch_and_says_how_to_remove_it(cli: Cli, tmp_path: Path) -> None:
    """`workspace discard` removes what a killed create left, offline like any discard. The branch stays:
    a workspace of another client may be on it, which no client can see; for a branch that create made the
    discard says how to delete it."""
    src = make_tree(tmp_path / "src", {**{f"d/f{i}": b"%d\n" % i for i in range(6)}, "k": b"k\n"})
    assert cli("init").code == 0
    commit(cli, src, "v1")
    assert cli("branch", "create", "old").code == 0
    for name in ("new", "old"):
        killed_create(cli, tmp_path, tmp_path / name, "--branch", name)
    gone = tmp_path / "repo-elsewhere"
    cli.repo.rename(gone)  # a discard needs no repository
    for name, made in (("new", True), ("old", False)):
        res = cli("workspace", "discard", str(tmp_path / name))
        assert res.code == 0, res.err
        assert not (tmp_path / name).exists()
        note = f"branch {name}, made by the interrupted workspace create, was kept: `strongroom branch delete {name}`"
        assert (note in res.err) == made, res.err
    gone.rename(cli.repo)
    assert set(heads(cli)) == {"main", "old", "new"}


def test_a_create_killed_before_its_metadata_is_run_again(cli: Cli, tmp_path: Path) -> None:
    """Killed before the metadata was written, a create leaves only its lock file (and perhaps the metadata's
    temporary file): the folder counts as empty, so the same create run again completes."""
    src = make_tree(tmp_path / "src", {"a": b"a\n"})
    assert cli("init").code == 0
    commit(cli, src, "v1")
    w = tmp_path / "ws"
    hook = injected_kill(tmp_path / "kill", "strongroom.service.workspace:_write_meta")
    assert cli("workspace", "create", str(w), "--branch", "feat", extra_env=hook).code == -signal.SIGKILL
    assert {p.name for p in w.iterdir()} <= {".strongroom-workspace.lock", f"{META}.tmp"}
    res = cli("workspace", "create", str(w), "--branch", "feat")
    assert res.code == 0, res.err
    assert files_of(w) == tree_snapshot(src) and changes(cli, w) == []


def test_a_workspace_swapped_for_a_link_while_discarded_is_refused_not_followed(cli: Cli, tmp_path: Path) -> None:
    """Whoever can rename in the workspace's parent swaps the folder for a link to another folder while the
    discard runs: the discard refuses it (exit 2, one line) and the other folder keeps every file."""
    src = make_tree(tmp_path / "src", {"a": b"a\n", "d/b": b"b\n"})
    assert cli("init").code == 0
    commit(cli, src, "v1")
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "feat").code == 0
    precious = make_tree(tmp_path / "precious", {"keep.txt": b"mine\n", "sub/more.txt": b"more\n"})
    hook = tmp_path / "swap"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "import strongroom.service.workspace as ws\n"
        "_real = ws._remove_all_but\n"
        "def _swapped(folder, keep):\n"
        f"    os.rename(folder, {str(tmp_path / 'ws.moved')!r})\n"
        f"    os.symlink({str(precious)!r}, folder)\n"
        "    return _real(folder, keep)\n"
        "ws._remove_all_but = _swapped\n"
    )
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)}
    res = cli("workspace", "discard", str(w), extra_env=env)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and "no longer the workspace folder" in res.err
    assert tree_snapshot(precious) == tree_snapshot(
        make_tree(tmp_path / "expected", {"keep.txt": b"mine\n", "sub/more.txt": b"more\n"})
    )


def test_a_discard_killed_half_way_is_completed_by_running_it_again(cli: Cli, tmp_path: Path) -> None:
    """The discard SIGKILLed before each of its unlinks in turn: the metadata goes last, so what is left is
    still a workspace (which says so) and a second discard removes it."""
    src = make_tree(tmp_path / "src", {**{f"f{i}": b"%d\n" % i for i in range(8)}, "d/x": b"x\n", "d/e/y": b"y\n"})
    assert cli("init").code == 0
    commit(cli, src, "v1")
    template = tmp_path / "template"
    assert cli("workspace", "create", str(template), "--branch", "feat").code == 0
    w = tmp_path / "ws"
    told = False
    for n in itertools.count(1):
        shutil.copytree(template, w, symlinks=True)
        res = cli("workspace", "discard", str(w), extra_env=injected_kill(tmp_path / "kill", "os:unlink", at=n))
        if res.code == 0:
            break
        assert res.code == -signal.SIGKILL, res.err
        if w.exists():
            if not told and (w / META).exists() and len(files_of(w)) < len(files_of(template)):
                res = cli("status", str(w))  # commit and switch refuse it too
                told = res.code == 1 and f"run `strongroom workspace discard {w}` again" in res.err
            res = cli("workspace", "discard", str(w))
            assert res.code == 0, (n, res.err)
        assert not w.exists()
    assert told and n > 10


def test_damaged_workspace_metadata_is_one_line_exit_2(cli: Cli, tmp_path: Path) -> None:
    w = _workspace(cli, tmp_path)
    meta = json.loads((w / META).read_text())
    for damage in ({"base": "not hex"}, {"base": None}, {"branch": 7}):
        (w / META).write_text(json.dumps({**meta, **damage}))
        for args in (("workspace", "discard", str(w)), ("status", str(w)), ("commit", str(w), "-m", "x")):
            res = cli(*args)
            assert res.code == 2 and res.err.count("\n") == 1 and "metadata is unreadable" in res.err, (damage, res.err)
    assert (w / "a").read_bytes() == b"a\n"


def test_a_workspace_whose_branch_was_deleted_says_how_to_make_it_again(cli: Cli, tmp_path: Path) -> None:
    w = _workspace(cli, tmp_path)
    assert cli("branch", "delete", "feat").code == 0
    (w / "a").write_bytes(b"edited\n")
    res = cli("commit", str(w), "-m", "x")
    assert res.code == 1 and res.err.count("\n") == 1 and "branch feat no longer exists" in res.err, res.err
    made_again = res.err.split("`")[1].split()[1:]  # strongroom branch create feat --from <base>
    assert cli(*made_again).code == 0
    res = cli("commit", str(w), "-m", "x")
    assert res.code == 0, res.err
    assert changes(cli, w) == []
