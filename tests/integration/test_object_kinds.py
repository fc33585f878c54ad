"""An object id names content, not its kind: a file whose bytes equal the encoding of a tree or of a commit
gets that object's id. Both must be stored and found by kind, or a dataset holding such a file (by accident,
or put there by anyone who can add a file) would make its versions unrestorable."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.backends.local import LocalBackend
from strongroom.core import codec
from strongroom.core.ids import ObjectKind
from strongroom.core.model import Tree
from strongroom.crypto.secret import Secret
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, Cli, make_tree, tree_snapshot

EMPTY_TREE = codec.encode_tree(Tree(()))


def _round_trip(cli: Cli, src: Path, out: Path, version: str = "main") -> None:
    res = cli("checkout", version, str(out))
    assert res.code == 0, res.err
    assert tree_snapshot(out) == tree_snapshot(src)


@pytest.mark.parametrize("order", ["together", "folder-first", "file-first"])
def test_a_file_with_the_bytes_of_an_empty_folders_tree(cli: Cli, tmp_path: Path, order: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    assert cli("init").code == 0
    if order != "file-first":
        (src / "empty_dir").mkdir()
    if order != "folder-first":
        (src / "notes.json").write_bytes(EMPTY_TREE)
    if order != "together":
        assert cli("commit", str(src), "-m", "first").code == 0
        if order == "folder-first":
            (src / "notes.json").write_bytes(EMPTY_TREE)
        else:
            (src / "empty_dir").mkdir()
    res = cli("commit", str(src), "-m", "both")
    assert res.code == 0, res.err
    _round_trip(cli, src, tmp_path / "out")
    assert cli("cat", "main", "notes.json").out_bytes == EMPTY_TREE
    assert cli("verify", "--full").code == 0
    assert cli("gc", "--keep-unreachable", "0").code == 0
    assert cli("verify", "--full").code == 0
    _round_trip(cli, src, tmp_path / "out-after-gc")


def test_a_file_with_the_bytes_of_a_commit(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": b"alpha\n"})
    assert cli("init").code == 0
    v1 = cli("commit", str(src)).out.strip()
    repo = Repository.open(LocalBackend(str(cli.repo)), Secret(PASSPHRASE.encode()))
    (src / "copy-of-v1").write_bytes(repo.read_object(bytes.fromhex(v1), ObjectKind.COMMIT))
    assert cli("commit", str(src)).code == 0
    _round_trip(cli, src, tmp_path / "out")
    assert cli("log").code == 0 and cli("ls", v1).code == 0  # the commit is still found as a commit
    assert cli("verify", "--full").code == 0
