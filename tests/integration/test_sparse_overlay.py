"""A sparse workspace's commit puts back the base's entries outside its paths. Where one clashes with what
the user made on disk (a base folder `labels/` outside the paths, a new file `labels` in the workspace), the
commit would have to drop what the user never saw: `status` lists the clash and the commit refuses (exit 1),
naming the paths; nothing changes until the user's entry is moved."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Cli, make_tree


def _status(cli: Cli, folder: Path) -> list[tuple[str, str]]:
    res = cli("--json", "status", str(folder))
    assert res.code == 0, res.err
    return sorted((c["status"], c["path"]) for c in json.loads(res.out)["changes"])


def test_a_file_where_the_base_has_a_hidden_folder_is_refused(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a/1": b"one\n", "labels/train.csv": b"precious\n", "labels/val.csv": b"v\n"})
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "dev", "--paths", "a/*").code == 0
    head = cli("branch", "list").out
    (w / "labels").write_bytes(b"a note\n")
    assert _status(cli, w) == [("added", "labels"), ("clash", "labels/train.csv"), ("clash", "labels/val.csv")]
    res = cli("commit", str(w), "-m", "add a note")
    assert res.code == 1, res.err
    assert len(res.err.strip().splitlines()) == 1 and "internal error" not in res.err
    assert "labels (hides labels/train.csv, labels/val.csv)" in res.err
    assert cli("branch", "list").out == head  # nothing committed
    assert cli("cat", "dev", "labels/train.csv").out == "precious\n"
    (w / "labels").rename(w / "labels.txt")  # moved out of the way: committed, the hidden files kept
    assert _status(cli, w) == [("added", "labels.txt")]
    res = cli("commit", str(w), "-m", "add a note")
    assert res.code == 0, res.err
    assert cli("cat", "dev", "labels/val.csv").out == "v\n" and cli("cat", "dev", "labels.txt").out == "a note\n"


def test_a_new_folder_where_the_base_has_a_hidden_file_is_refused(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"data/d.csv": b"1\n", "x": b"a file outside the paths\n", "y/z": b"z\n"})
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "b", "--paths", "data/*").code == 0
    make_tree(w, {"x/b": b"new\n", "y": b"y is a file now\n"})
    assert ("clash", "x") in _status(cli, w) and ("clash", "y/z") in _status(cli, w)
    res = cli("commit", str(w), "-m", "x is a folder")
    assert res.code == 1, res.err
    assert "2 path(s)" in res.err and "x (hides x)" in res.err and "y (hides y/z)" in res.err
    listed = json.loads(cli("--json", "ls", "b").out)
    assert sorted((e["type"], e["path"]) for e in listed) == [
        ("dir", "data"), ("dir", "y"), ("file", "data/d.csv"), ("file", "x"), ("file", "y/z")]
