"""Branches and tags (issue 4, first part): O(1) creation, immutable tags, name validation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, make_tree


@pytest.fixture
def two_versions(cli: Cli, tmp_path: Path) -> tuple[str, str, Path]:
    src = make_tree(tmp_path / "src", {"a.csv": b"x,y\n1,2\n", "img/b.png": b"\x89PNG" + bytes(5000)})
    assert cli("init").code == 0
    v1 = cli("commit", str(src), "-m", "one").out.strip()
    (src / "a.csv").write_bytes(b"x,y\n1,2\n3,4\n")
    v2 = cli("commit", str(src), "-m", "two").out.strip()
    return v1, v2, src


def test_branch_from_an_old_version_and_commit_on_it(cli: Cli, two_versions: tuple[str, str, Path]) -> None:
    v1, v2, src = two_versions
    res = cli("branch", "create", "cleaning", "--from", v1[:12])
    assert res.code == 0, res.err
    assert res.out.split() == ["cleaning", v1]
    (src / "new.txt").write_bytes(b"added on the branch")
    v3 = cli("commit", str(src), "--branch", "cleaning", "-m", "on branch").out.strip()
    entries = json.loads(cli("--json", "log", "--branch", "cleaning").out)
    assert [e["id"] for e in entries] == [v3, v1]  # the branch started at v1, not at main's head
    assert json.loads(cli("--json", "log", "--branch", "main").out)[0]["id"] == v2
    listed = {r["name"]: r["version"] for r in json.loads(cli("--json", "branch", "list").out)}
    assert listed == {"main": v2, "cleaning": v3}


def test_branch_create_is_constant_time(cli: Cli, two_versions: tuple[str, str, Path]) -> None:
    # O(1): nothing is read or copied, so the cost is that of opening the repository.
    t0 = time.perf_counter()
    assert cli("log").code == 0
    baseline = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert cli("branch", "create", "quick").code == 0
    assert time.perf_counter() - t0 < baseline + 1.0


@pytest.mark.parametrize("bad", ["a/b", "../x", "x..y", "bad\nname", "-dash", ".hidden", "", "x.lock"])
def test_bad_names_are_refused_with_exit_2(cli: Cli, two_versions: tuple[str, str, Path], bad: str) -> None:
    for args in (("branch", "create", bad), ("tag", "create", bad, "main")):
        res = cli(*args)
        assert res.code == 2, (bad, res.err)
        assert len(res.err.strip().splitlines()) == 1
    assert "Traceback" not in res.err


def test_existing_branch_name_is_refused(cli: Cli, two_versions: tuple[str, str, Path]) -> None:
    assert cli("branch", "create", "dev").code == 0
    res = cli("branch", "create", "dev")
    assert res.code == 2 and "already exists" in res.err


def test_tags_are_immutable_unless_forced(cli: Cli, two_versions: tuple[str, str, Path]) -> None:
    v1, v2, _ = two_versions
    assert cli("tag", "create", "release-1", v1).code == 0
    moved = cli("tag", "create", "release-1", v2)
    assert moved.code == 2 and "immutable" in moved.err
    assert cli("tag", "list").out.split() == ["release-1", v1]
    assert cli("tag", "create", "release-1", v2, "--force").code == 0
    assert cli("tag", "list").out.split() == ["release-1", v2]
    assert cli("ls", "release-1").code == 0  # a tag names a version everywhere a version is asked for


def test_deleting_refs(cli: Cli, two_versions: tuple[str, str, Path]) -> None:
    v1, _, _ = two_versions
    assert cli("tag", "create", "t", v1).code == 0
    assert cli("tag", "delete", "t").code == 0
    assert cli("tag", "list").out.strip() == ""
    assert cli("branch", "create", "tmp").code == 0
    assert cli("branch", "delete", "tmp").code == 0
    missing = cli("branch", "delete", "tmp")
    assert missing.code == 2 and "unknown" in missing.err
    assert cli("verify").code == 0
