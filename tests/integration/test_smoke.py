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
