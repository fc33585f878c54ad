"""Reflink sharing between workspaces (issue 4): a file another workspace of the repository holds unchanged
is cloned (shared blocks) on a reflink-capable filesystem, written elsewhere; never hard-linked. The XFS
tests run on a loop-mounted image (tests/xfs.py); the fallback runs on the ordinary tmp folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.service import workspace as ws
from strongroom.service.context import Session
from strongroom.store import reflink
from strongroom.store.clientstate import WorkspaceRegistry
from tests.conftest import PASSPHRASE, Cli, make_tree, tree_snapshot
from tests.xfs import reflink_fs, shared_extents  # noqa: F401 - reflink_fs is a fixture

FILES = {
    "images/a.jpg": os.urandom(40_000),
    "images/b.jpg": os.urandom(300_000),
    "tables/t.csv": b"id,label\n1,cat\n2,dog\n",
    "README": b"dataset\n",
    "empty": b"",
}
TOTAL = sum(len(v) for v in FILES.values())


def files_of(folder: Path) -> dict[str, tuple[str, bytes | str, int]]:
    return {k: v for k, v in tree_snapshot(folder).items() if not k.startswith(".strongroom")}


@pytest.fixture
def xfs(reflink_fs: Path) -> Iterator[Path]:  # noqa: F811 - the fixture imported above
    """A fresh folder on the shared XFS mount, removed after the test."""
    d = reflink_fs / f"t-{uuid.uuid4().hex[:12]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sr(tmp_path: Path, repo_path: Path) -> tuple[Session, str]:
    """A repository (on the ordinary tmp folder) with one version of FILES, and a session on it."""
    Strongroom.init(str(repo_path), PASSPHRASE)
    repo = Strongroom.open(str(repo_path), PASSPHRASE)
    v1 = repo.commit(str(make_tree(tmp_path / "src", FILES)), "base").id
    return repo._session, v1


def age_cache(session: Session, folder: Path) -> None:
    """Make a workspace's file cache look saved well after its files last changed (an old workspace), so
    only the stat check guards its files as donors (no racy-window re-hash)."""
    path = session.file_cache_path(session.open(), str(folder))
    later = time.time_ns() + 5_000_000_000
    os.utime(path, ns=(later, later))


def test_second_workspace_is_reflinked_and_shares_blocks(
    cli: Cli, sr: tuple[Session, str], tmp_path: Path, xfs: Path
) -> None:
    src, v1 = tmp_path / "src", sr[1]
    first = cli("workspace", "create", str(xfs / "w1"), "--branch", "one")
    assert first.code == 0, first.err
    assert "written" in first.err and "reflinked" not in first.err
    res = cli("--json", "workspace", "create", str(xfs / "w2"), "--branch", "two", "--from", v1)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["bytes_reflinked"] == TOTAL and out["bytes_written"] == 0 and out["files"] == len(FILES)
    assert files_of(xfs / "w2") == files_of(xfs / "w1") == tree_snapshot(src)
    for rel, data in FILES.items():
        if data:  # the same physical blocks, flagged shared, in both copies; separate inodes (no hard link)
            one, two = xfs / "w1" / rel, xfs / "w2" / rel
            assert shared_extents(one) and shared_extents(one) == shared_extents(two), rel
            assert one.stat().st_ino != two.stat().st_ino and two.stat().st_nlink == 1
    (xfs / "w2" / "README").write_bytes(b"v2\n")
    (xfs / "w2" / "images" / "a.jpg").unlink()
    v2 = json.loads(cli("--json", "commit", str(xfs / "w2"), "-m", "two").out)["id"]
    human = cli("workspace", "switch", str(xfs / "w1"), v2)  # README from w2 (a.jpg is only removed)
    assert human.code == 0 and "0 B written, 3 B reflinked" in human.err, human.err


def test_editing_a_reflinked_file_in_place_leaves_the_other_copy(sr: tuple[Session, str], xfs: Path) -> None:
    session, v1 = sr
    ws.create(session, str(xfs / "w1"), "one", None, [])
    assert ws.create(session, str(xfs / "w2"), "two", v1, []).bytes_reflinked == TOTAL
    with open(xfs / "w2" / "images" / "b.jpg", "r+b") as f:  # in place: same inode, copy-on-write
        f.seek(1000)
        f.write(b"EDITED")
    assert (xfs / "w1" / "images" / "b.jpg").read_bytes() == FILES["images/b.jpg"]
    assert (xfs / "w2" / "images" / "b.jpg").read_bytes()[1000:1006] == b"EDITED"
    assert ws.status(session, str(xfs / "w1"))[1] == []
    assert [(c.status, c.path) for c in ws.status(session, str(xfs / "w2"))[1]] == [("modified", "images/b.jpg")]


def test_a_donor_edited_since_its_commit_is_not_used(sr: tuple[Session, str], tmp_path: Path, xfs: Path) -> None:
    session, v1 = sr
    ws.create(session, str(xfs / "w1"), "one", None, [])
    time.sleep(0.02)  # past the filesystem's timestamp tick
    donor = xfs / "w1" / "images" / "a.jpg"
    mtime = donor.stat().st_mtime_ns
    with open(donor, "r+b") as f:  # same size, and the mtime put back: only the ctime tells
        f.write(b"tampered")
    os.utime(donor, ns=(mtime, mtime))
    age_cache(session, xfs / "w1")  # the stat check alone guards (no racy-window re-hash)
    info = ws.create(session, str(xfs / "w2"), "two", v1, [])
    assert info.bytes_written == len(FILES["images/a.jpg"])
    assert info.bytes_reflinked == TOTAL - len(FILES["images/a.jpg"])
    assert files_of(xfs / "w2") == tree_snapshot(tmp_path / "src")
    assert not shared_extents(xfs / "w2" / "images" / "a.jpg")


def test_a_racy_donor_is_rehashed(sr: tuple[Session, str], xfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit within the clock tick of the cached stat leaves the stat as cached: simulated by a stat check
    that sees only the size. The donor's cache was saved within a second of the edit, so the clone is hashed."""
    session, v1 = sr
    ws.create(session, str(xfs / "w1"), "one", None, [])
    with open(xfs / "w1" / "README", "r+b") as f:
        f.write(b"DATASET")
    monkeypatch.setattr(reflink, "_unchanged", lambda st, c: stat.S_ISREG(st.st_mode) and st.st_size == c.size)
    info = ws.create(session, str(xfs / "w2"), "two", v1, [])
    assert (xfs / "w2" / "README").read_bytes() == b"dataset\n"
    assert (info.bytes_written, info.bytes_reflinked) == (len(b"dataset\n"), TOTAL - len(b"dataset\n"))


def test_switch_reflinks_from_another_workspace(sr: tuple[Session, str], xfs: Path) -> None:
    session, v1 = sr
    ws.create(session, str(xfs / "w1"), "one", None, [])
    (xfs / "w1" / "images" / "c.jpg").write_bytes(os.urandom(70_000))
    (xfs / "w1" / "README").write_bytes(b"v2\n")
    v2 = ws.commit(session, str(xfs / "w1"), "two", None, 0).id  # the commit re-caches the new files
    ws.create(session, str(xfs / "w2"), "two", v1, [])
    info = ws.switch(session, str(xfs / "w2"), v2)
    assert (info.bytes_written, info.bytes_reflinked) == (0, 70_000 + 3)
    assert files_of(xfs / "w2") == files_of(xfs / "w1")
    assert shared_extents(xfs / "w2" / "images" / "c.jpg") == shared_extents(xfs / "w1" / "images" / "c.jpg")


def test_without_reflinks_files_are_written(
    sr: tuple[Session, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, v1 = sr
    ws.create(session, str(tmp_path / "w1"), "one", None, [])
    calls = []
    real = reflink.fcntl.ioctl

    def counting(fd: int, request: int, arg: int) -> object:
        calls.append(request)
        return real(fd, request, arg)

    monkeypatch.setattr(reflink, "_no_reflink", set())
    monkeypatch.setattr(reflink.fcntl, "ioctl", counting)
    info = ws.create(session, str(tmp_path / "w2"), "two", v1, [])
    assert (info.bytes_written, info.bytes_reflinked) == (TOTAL, 0)
    assert calls == [reflink.FICLONE]  # tried once: the filesystem pair is remembered
    assert files_of(tmp_path / "w2") == files_of(tmp_path / "w1") == tree_snapshot(tmp_path / "src")


def test_discard_unregisters_and_gone_workspaces_are_dropped(sr: tuple[Session, str], xfs: Path) -> None:
    session, v1 = sr
    registry = WorkspaceRegistry(session.settings.state_dir, session.open().config.repo_id)
    for name in ("w1", "w2", "w3"):
        ws.create(session, str(xfs / name), name, v1, [])
    assert registry.folders(lambda _: True) == [str(xfs / n) for n in ("w1", "w2", "w3")]
    assert stat.S_IMODE(os.stat(registry.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(registry.path)).st_mode) == 0o700
    ws.discard(session, str(xfs / "w1"))
    assert registry.folders(lambda _: True) == [str(xfs / "w2"), str(xfs / "w3")]
    shutil.rmtree(xfs / "w2")  # removed by hand: dropped when the registry is next read
    info = ws.create(session, str(xfs / "w4"), "w4", v1, [])
    assert info.bytes_reflinked == TOTAL  # from w3
    assert registry.folders(lambda _: True) == [str(xfs / "w3"), str(xfs / "w4")]
