from pathlib import Path

from tests.conftest import Cli, make_tree, tree_snapshot


def test_commit_checkout_round_trip_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": b"hello\n", "sub/b.bin": bytes(range(256)) * 5000})
    assert cli("init").code == 0
    res = cli("commit", str(src), "-m", "first")
    assert res.code == 0, res.err
    version = res.out.strip()
    assert len(version) == 64
    out = tmp_path / "out"
    assert cli("checkout", version[:10], str(out)).code == 0
    assert tree_snapshot(out) == tree_snapshot(src)
    assert cli("verify", "--full").code == 0


def test_checkout_that_cannot_create_a_folder_says_so_in_one_line(cli: Cli, tmp_path: Path) -> None:
    """A deep version restored under a longer destination path (its folders' paths pass the system's 4,096
    bytes there): one line naming the folder, exit 2, not an internal error."""
    import os

    src = tmp_path / "s"
    depth = (4093 - len(str(src))) // 201  # the source's deepest folder stays just under the limit
    deep = os.path.join(str(src), *(["d" * 200] * depth))
    os.makedirs(deep)
    Path(deep, "f").write_text("x")
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    res = cli("checkout", "main", str(tmp_path / ("r" * 200) / ("r" * 200)))  # 400 bytes longer
    assert res.code == 2, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "cannot restore d" in lines[0] and "internal error" not in lines[0]
