"""Fault injection below the repository (RELIABILITY T03, T06): an I/O error on any write of a commit leaves
every ref where it was and the next commit works; fsync errors are never retried as success; a read that
fails or returns wrong bytes once gives a warning and a clean verify, while persistent damage does not."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path

import pytest

from strongroom.backends.base import BackendError
from strongroom.backends.local import LocalBackend
from strongroom.backends.memory import MemoryBackend
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.secret import Secret
from strongroom.errors import StrongroomError
from strongroom.store import check
from strongroom.store.ingest import CommitRequest, CommitResult, commit_folder
from strongroom.store.lock import PUBLISH
from strongroom.store.refs import Refs
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, make_tree
from tests.faults.faulty import FaultyBackend

PACK_SIZE = 512 << 10  # several packs per commit, so "the second pack write" exists


def secret() -> Secret:
    return Secret(PASSPHRASE.encode())


def source(root: Path, seed: int) -> Path:
    rng = random.Random(seed)
    return make_tree(
        root,
        {
            "a.bin": rng.randbytes(900 << 10),
            "b/c.bin": rng.randbytes(700 << 10),
            "b/d.txt": b"%d\n" % seed * 5000,
            "e.bin": rng.randbytes(600 << 10),
        },
    )


def commit(repo: Repository, src: Path, message: str) -> CommitResult:
    return commit_folder(repo, CommitRequest(str(src), "main", message, "tester", workers=1))


@pytest.fixture
def faulty(tmp_path: Path) -> tuple[FaultyBackend, bytes]:
    """A memory repository behind a FaultyBackend, with one version; returns (backend, that version)."""
    fb = FaultyBackend(MemoryBackend())
    repo = Repository.create(fb, secret(), UNSAFE_TEST_ONLY, pack_size=PACK_SIZE)
    v1 = commit(repo, source(tmp_path / "v1", 1), "v1").commit_id
    return fb, v1


def reopen(backend: FaultyBackend | LocalBackend) -> Repository:
    """What the next command sees: nothing carried over in memory."""
    return Repository.open(backend, secret())


WRITE_FAULTS = [
    ("put", "data/", "E"),  # the first pack
    ("put", "data/", ".E"),  # a later pack, after one was written
    ("put", "index/", "E"),
    ("put", "counters", "E"),
    ("put", "refs", "E"),
    ("put_exclusive", "locks/", "E"),
]


@pytest.mark.parametrize(("op", "prefix", "actions"), WRITE_FAULTS, ids=lambda x: str(x))
def test_eio_on_a_commit_write_moves_no_ref(
    faulty: tuple[FaultyBackend, bytes], tmp_path: Path, op: str, prefix: str, actions: str
) -> None:
    fb, v1 = faulty
    before = reopen(fb).read_refs()
    src = source(tmp_path / "v2", 2)
    fb.plan(op, prefix, actions)
    with pytest.raises(StrongroomError) as exc:
        commit(reopen(fb), src, "v2")
    assert isinstance(exc.value, BackendError)
    assert [(o, a) for o, _, a in fb.injected] == [(op, "E")]
    fb.clear()

    repo = reopen(fb)
    after = repo.read_refs()
    assert after.branches == {"main": v1}
    assert after.generation == before.generation
    assert fb.size(PUBLISH) is None, "the publish lock was left behind"
    # Packs written before the fault are not damage: the repository verifies clean, even in full.
    assert check.verify(repo, workers=1).ok
    report = check.verify(reopen(fb), full=True, workers=1)
    assert report.ok, report.damage

    # The next commit completes, and the version holds the new data.
    v2 = commit(repo, src, "v2 again")
    assert v2.parent == v1
    repo = reopen(fb)
    assert repo.read_refs().branches == {"main": v2.commit_id}
    report = check.verify(repo, full=True, workers=1)
    assert report.ok, report.damage


def test_fsync_error_fails_the_write_and_is_never_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalBackend(str(tmp_path / "repo"))
    backend.ensure_root()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY, pack_size=PACK_SIZE)
    v1 = commit(repo, source(tmp_path / "v1", 1), "v1").commit_id

    real_fsync = os.fsync
    synced: list[str] = []

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append(path)
        if "/data/" in path and ".tmp" in path and sum(".tmp" in p and "/data/" in p for p in synced) == 2:
            raise OSError(5, os.strerror(5))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(BackendError):
        commit(reopen(backend), source(tmp_path / "v2", 2), "v2")
    monkeypatch.setattr(os, "fsync", real_fsync)

    failed = [p for p in synced if "/data/" in p and ".tmp" in p][1]
    assert synced.count(failed) == 1, "a failed fsync was retried"
    assert not os.path.exists(failed), "the temp file of the failed write was left behind"
    assert not os.path.exists(failed.split(".tmp")[0]), "a pack whose fsync failed was published"
    leftovers = [f for _, _, files in os.walk(tmp_path / "repo") for f in files if ".tmp" in f]
    assert leftovers == []

    repo = reopen(backend)
    assert repo.read_refs().branches == {"main": v1}
    assert check.verify(repo, workers=1).ok
    v2 = commit(repo, source(tmp_path / "v2", 2), "v2 again")
    assert check.verify(reopen(backend), full=True, workers=1).ok
    assert reopen(backend).read_refs().branches == {"main": v2.commit_id}


@pytest.fixture
def two_versions(faulty: tuple[FaultyBackend, bytes], tmp_path: Path) -> FaultyBackend:
    fb, _ = faulty
    commit(reopen(fb), source(tmp_path / "v2", 2), "v2")
    return fb


def test_transient_read_faults_during_full_verify_are_warnings(two_versions: FaultyBackend) -> None:
    fb = two_versions
    packs = len(list(fb.list("data")))
    assert packs >= 6
    trials = 0
    for action in "ESFZ":
        for k in range(packs):
            fb.clear()
            fb.injected.clear()
            fb.plan("get", "data/", "." * k + action)
            report = check.verify(reopen(fb), full=True, workers=1)
            assert len(fb.injected) == 1
            assert report.ok, (action, k, report.damage)
            name = fb.injected[0][1]
            assert any(name in w for w in report.warnings), report.warnings
            trials += 1
    assert trials >= 24


def test_transient_read_faults_while_walking_versions_are_warnings(two_versions: FaultyBackend) -> None:
    """The default verify reads every commit and tree (get_range); a fault that passes is not damage."""
    fb = two_versions
    fb.plan("get_range", "data/", "")
    check.verify(reopen(fb), workers=1)
    reads = fb.plans[0].calls
    assert reads >= 6  # commits and trees of two versions
    for action in "ESFZ":
        for k in range(reads):
            fb.clear()
            fb.injected.clear()
            fb.plan("get_range", "data/", "." * k + action)
            report = check.verify(reopen(fb), workers=1)
            assert len(fb.injected) == 1
            assert report.ok, (action, k, report.damage)
            assert report.warnings


def test_transient_fault_reading_an_index_file_is_not_damage(two_versions: FaultyBackend) -> None:
    fb = two_versions
    for action in "ESFZ":
        fb.clear()
        fb.plan("get", "index/", action)
        report = check.verify(reopen(fb), full=True, workers=1)
        assert report.ok, (action, report.damage)


@pytest.mark.parametrize("action", ["F*", "E*", "S*"])
def test_persistent_pack_damage_is_not_ok(two_versions: FaultyBackend, action: str) -> None:
    fb = two_versions
    repo = reopen(fb)
    fb.plan("get", "data/", action)
    report = check.verify(repo, full=True, workers=1)
    assert not report.ok
    packs = {n for n, _ in fb.list("data")}
    assert {d.what for d in report.damage} >= packs
    assert len(report.affected) == 2  # both versions lose files
    assert all(paths for paths in report.affected.values())


def test_persistent_garbled_tree_reads_are_not_ok(two_versions: FaultyBackend) -> None:
    fb = two_versions
    repo = reopen(fb)
    head = repo.read_refs().branches["main"]
    fb.plan("get_range", "data/", "F*")
    report = check.verify(repo, workers=1)
    assert not report.ok
    # Every read is garbled, the head commit first: that version is lost, and its history with it.
    assert report.affected == {head.hex(): ["(the whole version)"]}


def _partly_dead(tmp_path: Path, wholly_dead: bool = True) -> tuple[FaultyBackend, Repository]:
    """A repository whose first pack holds a live and a dead file (v1 on a deleted branch; "fresh" keeps only
    b.bin), and, if wholly_dead, a wholly dead pack (c.bin, only in v1)."""
    fb = FaultyBackend(MemoryBackend())
    repo = Repository.create(fb, secret(), UNSAFE_TEST_ONLY, pack_size=PACK_SIZE)
    rng = random.Random(5)
    a, b, c = rng.randbytes(300 << 10), rng.randbytes(300 << 10), rng.randbytes(700 << 10)
    commit(repo, make_tree(tmp_path / "v1", {"a.bin": a, "b.bin": b, **({"c.bin": c} if wholly_dead else {})}), "v1")
    commit_folder(repo, CommitRequest(str(make_tree(tmp_path / "v2", {"b.bin": b})), "fresh", "v2", "t", workers=1))

    def delete_main(refs: Refs) -> None:
        del refs.branches["main"]

    repo.edit_refs(delete_main, "branch delete")
    return fb, reopen(fb)


def test_a_gc_that_fails_leaves_no_pack_of_its_own_behind(tmp_path: Path) -> None:
    """On a full disk, a repack's new pack stayed when the index that would name it could not be written:
    the disk only got fuller and the next gc failed sooner. Packs it wrote and never published are removed."""
    from strongroom.store import gc as store_gc

    fb, repo = _partly_dead(tmp_path, wholly_dead=False)
    plan = dataclasses.replace(store_gc.plan(repo, 0, time.time_ns()), packs_dead=[])  # the repack alone
    assert plan.packs_repack
    packs_before = {n for n, _ in fb.list("data")}
    fb.plan("put", "index/", "E")  # the repacked packs are written, the index that would name them is not
    with pytest.raises(BackendError):
        store_gc.sweep(repo, plan, 0, time.time_ns())
    fb.clear()
    assert {n for n, _ in fb.list("data")} == packs_before  # the new pack is gone, the old ones all stay
    repo = reopen(fb)
    assert check.verify(repo, full=True, workers=1).ok
    assert repo.read_object(next(iter(repo.index.packs[plan.packs_repack[0]])).object_id, 1)
    store_gc.sweep(repo, store_gc.plan(repo, 0, time.time_ns()), 0, time.time_ns())  # room again: it completes
    assert check.verify(reopen(fb), full=True, workers=1).ok


def test_gc_drops_wholly_dead_packs_before_it_repacks(tmp_path: Path) -> None:
    """A repack needs room for its new packs; the dead packs need only an index write. With no room to write a
    pack at all, gc still frees the wholly dead ones."""
    from strongroom.store import gc as store_gc

    fb, repo = _partly_dead(tmp_path)
    plan = store_gc.plan(repo, 0, time.time_ns())
    fb.plan("put", "data/", "E*")  # no pack can be written
    with pytest.raises(BackendError):
        store_gc.sweep(repo, plan, 0, time.time_ns())
    fb.clear()
    left = {n.rsplit("/", 1)[-1] for n, _ in fb.list("data")}
    assert not left & set(plan.packs_dead)
    assert set(plan.packs_repack) <= left
    assert check.verify(reopen(fb), full=True, workers=1).ok


def test_a_reencrypt_that_fails_leaves_no_pack_of_its_own_behind(tmp_path: Path) -> None:
    """The same for `key reencrypt`: a 14.7 MB rewritten pack stayed after its index could not be written,
    and the retry on the same disk failed again for want of that room."""
    from strongroom.store import reencrypt as store_reencrypt

    fb, repo = _partly_dead(tmp_path)
    repo.rotate_key()
    packs_before = {n for n, _ in fb.list("data")}
    fb.plan("put", "index/", "E")
    with pytest.raises(BackendError):
        store_reencrypt.reencrypt(repo, retire=1)
    fb.clear()
    assert {n for n, _ in fb.list("data")} == packs_before
    store_reencrypt.reencrypt(reopen(fb), retire=1)
    assert check.verify(reopen(fb), full=True, workers=1).ok
