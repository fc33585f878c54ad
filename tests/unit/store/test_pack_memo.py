"""A commit finds the packs no index names (an interrupted commit's, an agent's read-ahead) without listing
every pack: a data folder whose stamp and indexed-pack count are as when all its packs were last found
indexed is skipped (Repository.adopt_orphan_packs with a memo). It must find every orphan a full listing
finds whenever a folder changed, and a wrong memo may only cost deduplication, never a wrong version."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from strongroom.backends.local import LocalBackend
from strongroom.core.ids import ObjectKind
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.secret import Secret
from strongroom.store import check, lock
from strongroom.store import repository as repository_module
from strongroom.store.ingest import CommitRequest, commit_folder
from strongroom.store.pack import PackBuilder
from strongroom.store.repository import PackMemo, Repository, load_pack_memo, save_pack_memo

PASS = Secret(b"pack memo passphrase")


class Listing(LocalBackend):
    """Records which folders were listed."""

    listed: list[str]

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        self.listed.append(prefix)
        return super().list(prefix)


@pytest.fixture
def backend(tmp_path: Path) -> Listing:
    b = Listing(str(tmp_path / "repo"))
    b.listed = []
    b.ensure_root()
    Repository.create(b, PASS, UNSAFE_TEST_ONLY, pack_size=64 << 10)
    return b


def reopen(b: LocalBackend) -> Repository:
    return Repository.open(b, PASS)


def age_folders(b: LocalBackend, seconds: float = 10) -> None:
    """Past the racy-clean second: as when the next commit comes a while later."""
    old = time.time() - seconds
    for d in os.scandir(os.path.join(b.root, "data")):
        os.utime(d.path, (old, old))


def orphan(b: LocalBackend, seed: int) -> str:
    """A pack written but never indexed, as a killed commit leaves one."""
    repo = reopen(b)
    builder = PackBuilder()
    data = os.urandom(3000) + bytes([seed])
    cid = repo.hasher(data)
    builder.add(ObjectKind.CHUNK, cid, repo.codec.encode(data, ObjectKind.CHUNK, cid), len(data))
    return repo.write_pack(builder)


def commit(b: LocalBackend, src: Path, memo_path: Path | None, message: str) -> None:
    (src / f"{message}.bin").write_bytes(os.urandom(200_000))
    req = CommitRequest(str(src), "main", message, "tester", workers=1, pack_memo_path=str(memo_path or "") or None)
    commit_folder(reopen(b), req)


def full_orphans(b: LocalBackend) -> set[str]:
    return set(reopen(b).adopt_orphan_packs())


def test_every_orphan_is_found_in_a_folder_that_changed(backend: Listing, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        commit(backend, src, None, f"v{i}")
    age_folders(backend)
    memo: PackMemo = {}
    assert reopen(backend).adopt_orphan_packs(memo) == []
    folders = len(os.listdir(os.path.join(backend.root, "data")))
    assert len(memo) == folders, "every old folder whose packs are all indexed is remembered"

    made = {orphan(backend, i) for i in range(6)}
    assert full_orphans(backend) == made
    backend.listed.clear()
    found = set(reopen(backend).adopt_orphan_packs(memo))
    assert found == made
    changed = {p[:2] for p in made}
    listed = sorted(p for p in backend.listed if p.startswith("data"))
    assert listed == sorted(f"data/{f}" for f in changed), "only the changed folders are listed"


def test_a_folder_written_within_the_racy_second_is_listed_again(backend: Listing, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    commit(backend, src, None, "v0")
    memo: PackMemo = {}
    reopen(backend).adopt_orphan_packs(memo)
    assert memo == {}, "folders stamped within the last second are not trusted to stay as they are"
    age_folders(backend)
    reopen(backend).adopt_orphan_packs(memo)
    assert memo


def test_packs_an_index_no_longer_names_are_found_again(backend: Listing, tmp_path: Path) -> None:
    """The count of indexed packs per folder is part of the memo: a lost index file makes its packs
    orphans again, in folders whose stamps did not change, and the next commit adopts them."""
    src = tmp_path / "src"
    src.mkdir()
    commit(backend, src, None, "v0")
    commit(backend, src, None, "v1")
    age_folders(backend)
    memo: PackMemo = {}
    reopen(backend).adopt_orphan_packs(memo)
    index_dir = os.path.join(backend.root, "index")
    newest = max(os.scandir(index_dir), key=lambda e: e.stat().st_mtime_ns)
    os.unlink(newest.path)
    lost = full_orphans(backend)
    assert lost
    assert set(reopen(backend).adopt_orphan_packs(memo)) == lost


def test_commits_keep_the_memo_and_list_only_what_changed(backend: Listing, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    memo_path = tmp_path / "cache" / "packs"
    commit(backend, src, memo_path, "v0")
    age_folders(backend)
    commit(backend, src, memo_path, "v1")  # remembers the old folders
    assert load_pack_memo(str(memo_path))
    age_folders(backend)
    backend.listed.clear()
    commit(backend, src, memo_path, "v2")
    data_listings = [p for p in backend.listed if p.startswith("data")]
    assert "data" not in data_listings, "a commit listed every pack"
    assert len(data_listings) < len(os.listdir(os.path.join(backend.root, "data")))
    assert check.verify(reopen(backend), full=True, workers=1).ok


def test_a_memo_that_lies_costs_deduplication_never_a_version(backend: Listing, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    memo_path = tmp_path / "cache" / "packs"
    commit(backend, src, memo_path, "v0")
    made = orphan(backend, 1)
    # Claims every folder unchanged, with the counts the index has, though `made` is in one of them.
    repo = reopen(backend)
    stamps = backend.folder_stamps("data")
    assert stamps is not None
    counts = {f: sum(1 for p in repo.index.packs if p[:2] == f) for f in stamps}
    save_pack_memo(str(memo_path), {f: (s, counts[f]) for f, s in stamps.items()})
    commit(backend, src, memo_path, "v1")
    assert made not in reopen(backend).index.packs  # not adopted: its chunks would be stored again
    report = check.verify(reopen(backend), full=True, workers=1)
    assert report.ok, report.damage


@pytest.mark.parametrize("content", [b"", b"not json", b'{"format": "sr-packmemo/1", "folders": {"ab": [1]}}', b"[]"])
def test_an_unreadable_memo_is_an_empty_one(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "packs"
    path.write_bytes(content)
    assert load_pack_memo(str(path)) == {}
    save_pack_memo(str(path), {"ab": (5, 2)})
    assert load_pack_memo(str(path)) == {"ab": (5, 2)}


def test_a_client_clock_ahead_of_the_filesystem_does_not_make_new_folders_old(
    backend: Listing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Now" is read from the repository's filesystem (the locks folder this command's reader lock changed):
    a client whose clock runs ahead of a file server's must not take a folder written a moment ago for one
    more than the racy window old."""
    src = tmp_path / "src"
    src.mkdir()
    commit(backend, src, None, "v0")
    real = time.time_ns
    monkeypatch.setattr(repository_module.time, "time_ns", lambda: real() + 5 * 10**9)
    memo: PackMemo = {}
    repo = reopen(backend)
    with lock.read_lock(backend, "commit"):
        repo.adopt_orphan_packs(memo)
    assert memo == {}, "folders written within the window were remembered"


class LockTakenWhileStamped(Listing):
    """Another command takes a lock (the locks folder's stamp moves) just after the data folders' stamps
    are read, five seconds later by every clock."""

    def folder_stamps(self, prefix: str):  # type: ignore[no-untyped-def]
        stamps = super().folder_stamps(prefix)
        if prefix == "data":
            later = time.time() + 5
            os.utime(os.path.join(self.root, "locks"), (later, later))
        return stamps


def test_a_lock_taken_between_the_stamps_does_not_make_new_folders_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Now" is read before the folders' stamps: were it read after, a lock taken in between would date
    it past a folder written a moment ago, and that folder would be skipped while it may still change."""
    b = LockTakenWhileStamped(str(tmp_path / "repo"))
    b.listed = []
    b.ensure_root()
    Repository.create(b, PASS, UNSAFE_TEST_ONLY, pack_size=64 << 10)
    src = tmp_path / "src"
    src.mkdir()
    commit(b, src, None, "v0")
    real = time.time_ns
    monkeypatch.setattr(repository_module.time, "time_ns", lambda: real() + 5 * 10**9)  # time has passed
    memo: PackMemo = {}
    repo = reopen(b)
    with lock.read_lock(b, "commit"):
        repo.adopt_orphan_packs(memo)
    assert memo == {}, "folders written within the window were remembered"
