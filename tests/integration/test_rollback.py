"""Rollback and swap detection through client-held state (RELIABILITY T09): a repository put back to an
older copy of itself, one replaced by another repository with the same id and another key, and one whose
refs forked at the same generation — every command exits 1 saying so until `strongroom trust-current`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from strongroom.backends.local import LocalBackend
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.secret import Secret
from strongroom.store import repository as repository_module
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, Cli, make_tree


def replace_folder(target: Path, replacement: Path) -> None:
    shutil.rmtree(target)
    shutil.copytree(replacement, target)


def every_command(cli: Cli, src: Path, tmp_path: Path) -> list[tuple[str, ...]]:
    return [
        ("log",), ("ls", "main"), ("cat", "main", "a.txt"), ("stats",), ("verify",), ("commit", str(src)),
        ("checkout", "main", str(tmp_path / "co")),
    ]


def assert_refused(cli: Cli, commands: list[tuple[str, ...]], word: str) -> None:
    for args in commands:
        r = cli(*args)
        assert r.code == 1, (args, r.code, r.err)
        assert word in r.err and "Traceback" not in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1
        assert "trust-current" in r.err  # says how to accept the change


@pytest.fixture
def two_versions(cli: Cli, tmp_path: Path) -> tuple[Path, Path, str, str]:
    src = make_tree(tmp_path / "src", {"a.txt": b"one\n"})
    assert cli("init").code == 0
    v1 = cli("commit", str(src)).out.strip()
    old = tmp_path / "old-copy"
    shutil.copytree(cli.repo, old)
    (src / "a.txt").write_bytes(b"two\n")
    v2 = cli("commit", str(src)).out.strip()
    return src, old, v1, v2


def test_an_older_copy_of_the_repository_is_a_rollback(cli: Cli, tmp_path: Path,
                                                        two_versions: tuple[Path, Path, str, str]) -> None:
    src, old, v1, _ = two_versions
    replace_folder(cli.repo, old)
    assert_refused(cli, every_command(cli, src, tmp_path), "rolled back")
    assert not (tmp_path / "co").exists()

    r = cli("trust-current")
    assert r.code == 0, r.err
    assert [e["id"] for e in json.loads(cli("--json", "log").out)] == [v1]
    assert cli("commit", str(src)).code == 0
    assert cli("verify").code == 0


def test_another_repository_with_the_same_id_is_a_swap(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       two_versions: tuple[Path, Path, str, str]) -> None:
    src, _, _, _ = two_versions
    repo_id = json.loads((cli.repo / "config").read_text())["id"]

    # An adversary builds a repository of their own (same passphrase, fresh keys) under the same id.
    forged = tmp_path / "forged"
    real_urandom = os.urandom
    calls = []

    def urandom(n: int) -> bytes:
        calls.append(n)
        return bytes.fromhex(repo_id) if len(calls) == 1 else real_urandom(n)

    backend = LocalBackend(str(forged))
    backend.ensure_root()
    with monkeypatch.context() as m:
        m.setattr(repository_module.os, "urandom", urandom)
        Repository.create(backend, Secret(PASSPHRASE.encode()), UNSAFE_TEST_ONLY)
    assert json.loads((forged / "config").read_text())["id"] == repo_id
    Cli(forged, dict(cli.env, STRONGROOM_STATE_DIR=str(tmp_path / "adversary"))) \
        ("commit", str(make_tree(tmp_path / "theirs", {"a.txt": b"theirs\n"})))

    replace_folder(cli.repo, forged)
    assert_refused(cli, [("log",), ("verify",), ("commit", str(src))], "swapped")
    assert cli("trust-current").code == 0
    assert cli("cat", "main", "a.txt").out == "theirs\n"


def test_refs_that_forked_at_the_same_generation_are_a_swap(cli: Cli, tmp_path: Path,
                                                            two_versions: tuple[Path, Path, str, str]) -> None:
    src, old, _, _ = two_versions
    # Someone else, with the key, commits a different second version on the old copy.
    other = Cli(old, dict(cli.env, STRONGROOM_STATE_DIR=str(tmp_path / "other-client")))
    assert other("commit", str(make_tree(tmp_path / "fork", {"a.txt": b"fork\n"}))).code == 0

    replace_folder(cli.repo, old)
    assert_refused(cli, [("log",), ("verify",), ("commit", str(src))], "swapped")
    assert cli("trust-current").code == 0
    assert cli("cat", "main", "a.txt").out == "fork\n"
