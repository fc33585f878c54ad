"""merge, revert, reset and protected branches (issue 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, Cli, make_tree


@pytest.fixture
def forked(cli: Cli, tmp_path: Path) -> tuple[Path, Path]:
    """main and dev share a base; main changed a, dev changed sub/c and added n."""
    main = make_tree(tmp_path / "main", {"a": b"base\n", "b": b"b\n", "sub/c": b"c\n"})
    assert cli("init").code == 0
    assert cli("commit", str(main), "-m", "base").code == 0
    assert cli("branch", "create", "dev").code == 0
    dev = tmp_path / "dev"
    assert cli("checkout", "dev", str(dev)).code == 0
    (main / "a").write_bytes(b"main change\n")
    assert cli("commit", str(main), "-m", "main work").code == 0
    (dev / "sub" / "c").write_bytes(b"dev change\n")
    (dev / "n").write_bytes(b"new on dev\n")
    assert cli("commit", str(dev), "-b", "dev", "-m", "dev work").code == 0
    return main, dev


def test_three_way_merge_takes_each_sides_changes(cli: Cli, forked: tuple[Path, Path]) -> None:
    res = cli("--json", "merge", "dev", "--into", "main")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["kind"] == "merge"
    assert cli("cat", "main", "a").out == "main change\n"
    assert cli("cat", "main", "sub/c").out == "dev change\n"
    assert cli("cat", "main", "n").out == "new on dev\n"
    log = json.loads(cli("--json", "log", "--branch", "main").out)
    assert len(log[0]["parents"]) == 2
    assert cli("verify", "--full").code == 0
    # merging again changes nothing
    assert json.loads(cli("--json", "merge", "dev", "--into", "main").out)["kind"] == "up-to-date"


def test_fast_forward(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "s", {"x": b"1"})
    cli("init")
    cli("commit", str(src))
    cli("branch", "create", "feature")
    (src / "x").write_bytes(b"2")
    v2 = cli("commit", str(src), "-b", "feature").out.strip()
    out = json.loads(cli("--json", "merge", "feature", "--into", "main").out)
    assert out == {"branch": "main", "version": v2, "kind": "fast-forward", "conflicts": [], "checks_passed": []}


def test_conflicts_exit_1_and_strategies_resolve(cli: Cli, forked: tuple[Path, Path]) -> None:
    _, dev = forked
    (dev / "a").write_bytes(b"dev also changed a\n")
    assert cli("commit", str(dev), "-b", "dev").code == 0
    before = cli("branch", "list").out
    res = cli("merge", "dev", "--into", "main")
    assert res.code == 1 and "conflicting" in res.err and " a" in res.err
    assert cli("branch", "list").out == before  # nothing moved
    assert cli("merge", "dev", "--into", "main", "--strategy", "theirs").code == 0
    assert cli("cat", "main", "a").out == "dev also changed a\n"
    bad = cli("merge", "dev", "--into", "main", "--strategy", "mine")
    assert bad.code == 2


def test_revert_undoes_one_version(cli: Cli, forked: tuple[Path, Path]) -> None:
    main, _ = forked
    (main / "b").write_bytes(b"oops\n")
    v = cli("commit", str(main), "-m", "mistake").out.strip()
    (main / "extra").write_bytes(b"kept\n")
    assert cli("commit", str(main), "-m", "later").code == 0
    assert cli("revert", v).code == 0
    assert cli("cat", "main", "b").out == "b\n"  # the mistake is undone
    assert cli("cat", "main", "extra").out == "kept\n"  # later work stays


def test_a_failed_checks_output_is_shown_but_never_logged(cli: Cli, forked: tuple[Path, Path]) -> None:
    """A validator may print the very rows it rejects: the user sees its output, the permanent audit log (and
    what it exports to a SIEM) records only the check, its exit code and a digest of the output."""
    _, dev = forked
    row = "alice,987-65-4321"
    assert cli("branch", "protect", "main", "--require-check", "sh -c 'cat rows.csv; exit 3'").code == 0
    (dev / "rows.csv").write_text(f"name,ssn\n{row}\n")
    assert cli("commit", str(dev), "-b", "dev", "-m", "extra").code == 0
    failed = cli("merge", "dev", "--into", "main")
    assert failed.code == 1 and row in failed.err and len(failed.err.strip().splitlines()) == 1
    exported = cli("audit", "export")
    assert exported.code == 0, exported.err
    denied = [json.loads(line) for line in exported.out.splitlines() if '"merge"' in line]
    assert denied and denied[-1]["outcome"] == "denied" and "exit 3" in denied[-1]["details"]["error"]["message"]
    assert "987-65-4321" not in exported.out


def test_reset_moves_a_branch_back(cli: Cli, forked: tuple[Path, Path]) -> None:
    log = json.loads(cli("--json", "log", "--branch", "main").out)
    assert cli("reset", "main", log[1]["id"]).code == 0
    assert json.loads(cli("--json", "log", "--branch", "main").out)[0]["id"] == log[1]["id"]


def test_protected_branch_takes_versions_only_by_checked_merge(cli: Cli, forked: tuple[Path, Path]) -> None:
    main, dev = forked
    assert cli("branch", "protect", "main", "--require-check", "test -f b").code == 0
    direct = cli("commit", str(main), "-m", "direct")
    assert direct.code == 1 and "protected" in direct.err
    assert cli("reset", "main", "main~1").code == 1
    assert cli("branch", "delete", "main").code == 1
    def main_line() -> str:
        return next(line for line in cli("branch", "list").out.splitlines() if line.startswith("main\t"))

    head = main_line()
    (dev / "b").unlink()
    assert cli("commit", str(dev), "-b", "dev", "-m", "drop b").code == 0
    failed = cli("merge", "dev", "--into", "main")
    assert failed.code == 1 and "test -f b" in failed.err
    assert main_line() == head  # a failed check leaves the branch unchanged
    (dev / "b").write_bytes(b"b restored\n")
    assert cli("commit", str(dev), "-b", "dev", "-m", "b back").code == 0
    ok = cli("--json", "merge", "dev", "--into", "main")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["checks_passed"] == ["test -f b"]
    assert cli("verify", "--full").code == 0


def _ls(cli: Cli, version: str) -> list[tuple[str, str]]:
    """(kind, path) of every entry of a version, as `ls --json` gives them."""
    res = cli("--json", "ls", version)
    assert res.code == 0, res.err
    return sorted((e["type"], e["path"]) for e in json.loads(res.out))


def test_revert_of_a_file_turned_folder_brings_the_file_back_without_the_folder(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "v", {"a": b"file\n", "k": b"keep\n"})
    assert cli("init").code == 0
    assert cli("commit", str(src), "-m", "v1").code == 0
    (src / "a").unlink()
    make_tree(src, {"a/b": b"inner\n"})
    v2 = cli("commit", str(src), "-m", "a becomes a folder").out.strip()
    assert cli("revert", v2).code == 0
    assert [p for _, p in _ls(cli, "main")] == ["a", "k"]
    out = tmp_path / "out"
    assert cli("checkout", "main", str(out)).code == 0
    assert (out / "a").read_bytes() == b"file\n"
    assert cli("verify", "--full").code == 0


def test_merge_keeps_each_sides_folder_changes(cli: Cli, tmp_path: Path) -> None:
    """A folder one side turned into a file, deleted, or added empty: that side wins, as for files."""
    src = make_tree(tmp_path / "v", {"a/x": b"x\n", "tmpdata/j": b"junk\n", "k": b"k\n"})
    assert cli("init").code == 0
    v1 = cli("commit", str(src), "-m", "v1").out.strip()
    assert cli("branch", "create", "feat", "--from", v1).code == 0
    feat = tmp_path / "feat"
    assert cli("checkout", "feat", str(feat)).code == 0
    shutil.rmtree(src / "a")
    shutil.rmtree(src / "tmpdata")
    (src / "a").write_bytes(b"now a file\n")
    (src / "empty-on-main").mkdir()
    assert cli("commit", str(src), "-m", "main: a is a file, tmpdata gone").code == 0
    (feat / "k").write_bytes(b"changed on feat\n")
    (feat / "empty-on-feat").mkdir()
    assert cli("commit", str(feat), "-b", "feat", "-m", "feat: edit k").code == 0
    res = cli("merge", "feat", "--into", "main")
    assert res.code == 0, res.err
    assert _ls(cli, "main") == [("dir", "empty-on-feat"), ("dir", "empty-on-main"), ("file", "a"), ("file", "k")]
    out = tmp_path / "out"
    assert cli("checkout", "main", str(out)).code == 0
    assert (out / "a").read_bytes() == b"now a file\n" and (out / "k").read_bytes() == b"changed on feat\n"


def test_merge_takes_a_folder_mode_changed_on_one_side(cli: Cli, tmp_path: Path) -> None:
    """Merge kept our folder's mode even when only the merged-in side had changed it."""
    src = make_tree(tmp_path / "v", {"secret/k": b"key\n", "readme": b"r1\n"})
    os.chmod(src / "secret", 0o755)
    assert cli("init").code == 0
    assert cli("commit", str(src), "-m", "base").code == 0
    assert cli("branch", "create", "feat").code == 0
    os.chmod(src / "secret", 0o700)
    assert cli("commit", str(src), "-b", "feat", "-m", "feat: lock secret down").code == 0
    os.chmod(src / "secret", 0o755)
    (src / "readme").write_bytes(b"r2\n")
    assert cli("commit", str(src), "-m", "main: readme").code == 0
    res = cli("merge", "feat", "--into", "main")
    assert res.code == 0, res.err
    assert _modes(cli, "main") == {"secret": "0o700", "secret/k": "0o644", "readme": "0o644"}
    assert cli("cat", "main", "readme").out == "r2\n"
    os.chmod(src / "secret", 0o750)  # main and feat (0o700) now differ: a conflict a strategy resolves
    assert cli("commit", str(src), "-m", "main: 750").code == 0
    os.chmod(src / "secret", 0o711)
    assert cli("commit", str(src), "-b", "feat", "-m", "feat: 711").code == 0
    res = cli("merge", "feat", "--into", "main")
    assert res.code == 1 and "1 conflicting path(s): secret" in res.err
    assert cli("merge", "feat", "--into", "main", "--strategy", "theirs").code == 0
    assert _modes(cli, "main")["secret"] == "0o711"


def _modes(cli: Cli, version: str) -> dict[str, str]:
    return {e["path"]: e["mode"] for e in json.loads(cli("--json", "ls", version).out)}


def test_a_file_on_one_side_and_a_folder_on_the_other_is_a_conflict(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "v", {"k": b"k\n"})
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    assert cli("branch", "create", "feat").code == 0
    feat = tmp_path / "feat"
    assert cli("checkout", "feat", str(feat)).code == 0
    (src / "x").mkdir()
    assert cli("commit", str(src)).code == 0
    (feat / "x").write_bytes(b"a file\n")
    assert cli("commit", str(feat), "-b", "feat").code == 0
    before = cli("branch", "list").out
    res = cli("merge", "feat", "--into", "main")
    assert res.code == 1 and "1 conflicting path(s): x" in res.err
    assert cli("branch", "list").out == before


def test_gc_during_a_protected_merges_check_keeps_the_merge(
    cli: Cli, forked: tuple[Path, Path], tmp_path: Path
) -> None:
    """The checks may run for an hour between writing the merge and publishing it; gc meanwhile must not
    collect the merge's objects as unreachable (the merge holds a reader's lock until it publishes)."""
    flag = tmp_path / "check-running"
    assert cli("branch", "protect", "main", "--require-check", f"sh -c 'touch {flag}; sleep 3'").code == 0
    env = {**cli.env, "STRONGROOM_PASSPHRASE": PASSPHRASE}
    merging = subprocess.Popen(
        [sys.executable, "-m", "strongroom", "--repo", str(cli.repo), "merge", "dev", "--into", "main"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists()
    res = cli("gc", "--keep-unreachable", "0")
    _, err = merging.communicate(timeout=120)
    assert merging.returncode == 0, err
    assert res.code == 1 and "gc does not delete while others read" in res.err, res.out + res.err
    assert cli("verify", "--full").code == 0
    assert cli("cat", "main", "n").out == "new on dev\n"


def test_a_checkout_left_by_a_merge_killed_during_its_check_is_removed(
    cli: Cli, forked: tuple[Path, Path], tmp_path: Path
) -> None:
    """A merge killed while its check ran left the candidate's decrypted checkout in the temporary folder for
    good. The next checked merge removes those of processes that no longer run, and only those."""
    _main, dev = forked
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = tmp / f"strongroom-check-{gone.pid}-abcd" / "candidate"
    left.mkdir(parents=True)
    (left / "rows.csv").write_bytes(b"secret,row\n")
    alive = tmp / f"strongroom-check-{os.getpid()}-efgh"
    alive.mkdir()
    assert cli("branch", "protect", "main", "--require-check", "true").code == 0
    (dev / "new.txt").write_bytes(b"new\n")
    assert cli("commit", str(dev), "-b", "dev", "-m", "more").code == 0
    r = cli("merge", "dev", "--into", "main", extra_env={"TMPDIR": str(tmp)})
    assert r.code == 0, r.err
    assert not left.parent.exists()
    assert alive.exists()
    assert sorted(p.name for p in tmp.iterdir()) == [alive.name]
