"""A sparse workspace's commit puts back the base's entries outside its paths. Where one clashes with what
the user made on disk (a base file `x` outside the paths, a new folder `x/` in the workspace), what is on
disk wins: the version never names `x` twice, which no checkout could restore."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Cli, make_tree


def test_a_new_folder_where_the_base_has_a_file_outside_the_paths(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"data/d.csv": b"1\n", "x": b"a file outside the paths\n", "y/z": b"z\n"})
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    w = tmp_path / "ws"
    assert cli("workspace", "create", str(w), "--branch", "b", "--paths", "data/*").code == 0
    make_tree(w, {"x/b": b"new\n", "y": b"y is a file now\n"})
    res = cli("commit", str(w), "-m", "x is a folder")
    assert res.code == 0, res.err
    listed = json.loads(cli("--json", "ls", "b").out)
    names = [(e["type"], e["path"]) for e in listed]
    assert sorted(names) == [("dir", "data"), ("dir", "x"), ("file", "data/d.csv"), ("file", "x/b"), ("file", "y")]
    out = tmp_path / "out"
    assert cli("checkout", "b", str(out)).code == 0
    assert (out / "x" / "b").read_bytes() == b"new\n" and (out / "y").read_bytes() == b"y is a file now\n"
    assert cli("verify", "--full").code == 0
