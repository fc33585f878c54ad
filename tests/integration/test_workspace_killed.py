"""Workspace commands killed (SIGKILL) half way: what is left says so, and running the same command again
finishes it. The kill lands inside a real `strongroom` process (conftest.injected_bug)."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
from pathlib import Path

from tests.conftest import Cli, injected_bug, make_tree, tree_snapshot

META = ".strongroom-workspace.json"


def files_of(folder: Path) -> dict[str, tuple[str, bytes | str, int]]:
    return {k: v for k, v in tree_snapshot(folder).items() if not k.startswith(".strongroom-workspace")}


def commit(cli: Cli, folder: Path, message: str) -> str:
    res = cli("--json", "commit", str(folder), "-m", message)
    assert res.code == 0, res.err
    return str(json.loads(res.out)["id"])


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
        res = cli("workspace", "discard", str(w), extra_env=injected_bug(tmp_path / "kill", "os:unlink", kill_at=n))
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
