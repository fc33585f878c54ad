"""Index compaction: every commit writes an index file and every command reads them all, so past a bound the
smallest are merged into one. The number stays bounded; nothing indexed is lost; a compaction that fails at
any write leaves a repository that verifies clean; it skips while another command holds the repository, and
those that start meanwhile wait for it instead of failing; a load that finds a file deleted under it starts
again rather than reporting damage."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.backends.base import Backend, BackendError
from strongroom.backends.memory import MemoryBackend
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.errors import RepositoryLocked
from strongroom.store import check, lock, repository
from strongroom.store.ingest import CommitRequest, commit_folder
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE
from tests.faults.faulty import FaultyBackend
from tests.faults.test_faulty_backend import reopen, secret

MOST, KEPT = 4, 2


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository, "INDEX_FILES_MOST", MOST)
    monkeypatch.setattr(repository, "INDEX_FILES_KEPT", KEPT)


def index_files(backend: Backend) -> list[str]:
    return sorted(name for name, _ in backend.list("index"))


def grow(repo: Repository, src: Path, n: int, start: int = 0) -> list[bytes]:
    """n versions, each adding one file (so each writes one index file)."""
    src.mkdir(exist_ok=True)
    out = []
    for i in range(start, start + n):
        (src / f"f{i}.bin").write_bytes(os.urandom(20_000 + 997 * i))
        out.append(commit_folder(repo, CommitRequest(str(src), "main", f"v{i}", "tester", workers=1)).commit_id)
    return out


def indexed(backend: Backend) -> dict[bytes, tuple[str, int, int]]:
    """Every object a fresh opener finds, and where."""
    return {oid: (loc.pack_id, loc.offset, loc.length) for oid, loc in reopen(backend).index.locations.items()}


def assert_sound(backend: Backend, settled: bool = True) -> None:
    """Verifies clean, in full and keyless; settled: refs list exactly the index files there (an interrupted
    write may leave one unlisted, as an interrupted commit does: the next publish lists it)."""
    repo = reopen(backend)
    report = check.verify(repo, full=True, workers=1)
    assert report.ok, report.damage
    structure = check.verify_structure(backend)
    assert structure.ok, structure.damage
    if not settled:
        return
    assert not [w for w in structure.warnings if "not listed" in w]
    listed = repo.read_refs().index_files
    assert sorted(f"index/{n}" for n in listed or ()) == index_files(backend), "refs list exactly the files there"


def test_commits_keep_the_index_files_bounded_and_every_version_whole(small_bounds: None, tmp_path: Path) -> None:
    backend = MemoryBackend()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    merged = 0
    for i in range(14):
        grow(repo, tmp_path / "src", 1, start=i)
        before = indexed(backend)
        merged += repo.compact_index()  # as the service does after each commit
        assert len(index_files(backend)) <= MOST
        assert indexed(backend) == before, "compaction regroups index entries; it never drops or moves one"
    assert merged > 0
    assert_sound(backend)


def test_a_commit_through_the_library_compacts(small_bounds: None, tmp_path: Path) -> None:
    sr = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(MOST + 3):
        (src / f"f{i}").write_bytes(os.urandom(5000))
        sr.commit(str(src), message=f"v{i}", workers=1)
        assert len(os.listdir(tmp_path / "repo" / "index")) <= MOST
    result = sr.verify("full")
    assert result.ok and result.versions == MOST + 3, result.damage


def test_the_large_files_are_left_alone(small_bounds: None, tmp_path: Path) -> None:
    backend = MemoryBackend()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"big{i}.bin").write_bytes(os.urandom(30_000))
    grow(repo, src, 1)
    largest = max(backend.list("index"), key=lambda x: x[1])[0]
    grow(repo, src, MOST, start=1)
    assert repo.compact_index() == MOST + 1 - KEPT
    assert largest in index_files(backend), "the initial import's index file was rewritten"


@pytest.mark.parametrize(
    ("op", "prefix", "actions"),
    [
        ("put_exclusive", "locks/", "E"),  # the publish lock
        ("put_exclusive", "locks/", ".E"),  # the exclusive lock
        ("put", "index/", "E"),  # the merged file
        ("put", "counters", "E"),  # the nonce count, just before the refs
        ("put", "refs", "E"),  # the refs that list the merged file
        ("delete", "index/", "E"),  # the first replaced file
        ("delete", "index/", ".E"),  # a later one
    ],
    ids=lambda x: str(x),
)
def test_a_compaction_failing_at_any_write_leaves_a_sound_repository(
    small_bounds: None, tmp_path: Path, op: str, prefix: str, actions: str
) -> None:
    fb = FaultyBackend(MemoryBackend())
    repo = Repository.create(fb, secret(), UNSAFE_TEST_ONLY)
    grow(repo, tmp_path / "src", MOST + 2)
    before = indexed(fb)
    fb.plan(op, prefix, actions)
    with pytest.raises(BackendError):
        reopen(fb).compact_index()
    assert [(o, a) for o, _, a in fb.injected] == [(op, "E")]
    fb.clear()
    assert indexed(fb) == before
    assert_sound(fb, settled=False)
    assert fb.size(lock.PUBLISH) is None and fb.size(lock.EXCLUSIVE) is None
    # The next commit compacts, and finds what the failed compaction left.
    repo = reopen(fb)
    grow(repo, tmp_path / "src", 1, start=MOST + 2)
    repo.compact_index()
    assert len(index_files(fb)) <= MOST
    assert_sound(fb)


def readers(backend: Backend) -> list[str]:
    return [n for n, _ in backend.list("locks") if n.startswith("locks/read-")]


def _hold(backend: Backend, name: str, command: str) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "time_ns": time.time_ns(), "command": command}
    backend.put(name, json.dumps(record).encode())


def test_skipped_while_another_command_holds_the_repository(small_bounds: None, tmp_path: Path) -> None:
    backend = MemoryBackend()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    grow(repo, tmp_path / "src", MOST + 2)
    files = index_files(backend)
    for held in ("locks/read-0123456789abcdef", lock.PUBLISH, lock.EXCLUSIVE):
        _hold(backend, held, "checkout")
        assert repo.compact_index() == 0
        assert index_files(backend) == files
        assert backend.get(held)  # someone else's lock is never taken away
        backend.delete(held)
    assert repo.compact_index() > 0


def test_a_damaged_index_file_is_left_for_verify_and_repair(small_bounds: None, tmp_path: Path) -> None:
    backend = MemoryBackend()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    grow(repo, tmp_path / "src", MOST + 2)
    victim = min(backend.list("index"), key=lambda x: x[1])[0]  # the smallest: merged first
    data = bytearray(backend.get(victim))
    data[-5] ^= 1
    backend.put(victim, bytes(data))
    assert reopen(backend).compact_index() == 0
    assert victim in index_files(backend)
    assert not check.verify(reopen(backend), workers=1).ok


def test_readers_wait_for_a_compaction_but_not_for_gc(tmp_path: Path) -> None:
    backend = MemoryBackend()
    _hold(backend, lock.EXCLUSIVE, "gc")
    with pytest.raises(RepositoryLocked, match="gc"), lock.read_lock(backend, "checkout"):
        pass
    assert not readers(backend), "a refused reader leaves no flag"

    backend.delete(lock.EXCLUSIVE)
    _hold(backend, lock.EXCLUSIVE, lock.COMPACTING)
    entered = threading.Event()

    def reader() -> None:
        with lock.read_lock(backend, "checkout"):
            entered.set()

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    assert not entered.is_set(), "a reader went in while the index files were being replaced"
    assert readers(backend), "a waiting reader keeps its flag (no gc may start)"
    backend.delete(lock.EXCLUSIVE)
    t.join(5)
    assert entered.is_set()


class _Racing(MemoryBackend):
    """Runs ``hook`` (once) just before the first index file is read: a compaction by another process."""

    hook: object = None

    def get(self, name: str) -> bytes:
        hook, self.hook = self.hook, None
        if callable(hook) and name.startswith("index/"):
            hook()
        elif hook is not None:
            self.hook = hook
        return super().get(name)


def test_a_load_that_finds_a_file_deleted_under_it_starts_again(
    small_bounds: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = _Racing()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    grow(repo, tmp_path / "src", MOST + 2)
    before = indexed(backend)
    monkeypatch.setattr(repository, "INDEX_FILES_KEPT", 0)  # every file is replaced, the one being read too
    other = reopen(backend)
    reader = reopen(backend)
    backend.hook = other.compact_index
    idx = reader.load_index()
    assert backend.hook is None, "the compaction did not run under the load"
    assert len(index_files(backend)) == 1
    assert not idx.bad_files
    assert {oid: (loc.pack_id, loc.offset, loc.length) for oid, loc in idx.locations.items()} == before


def test_junk_in_the_index_folder_is_left_alone(small_bounds: None, tmp_path: Path) -> None:
    """A stray file there is reported by verify, never merged, and does not stop compaction."""
    backend = MemoryBackend()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    backend.put("index/notes.txt", os.urandom(200_000))
    for i in range(10):
        grow(repo, tmp_path / "src", 1, start=i)
        repo.compact_index()
    files = index_files(backend)
    assert "index/notes.txt" in files and len(files) <= MOST + 1


class _SlowReads(MemoryBackend):
    delay = 0.0

    def get(self, name: str) -> bytes:
        if name.startswith("index/"):
            time.sleep(self.delay)
        return super().get(name)


def test_a_slow_store_does_not_keep_readers_waiting(small_bounds: None, tmp_path: Path) -> None:
    """The files are read and merged before the locks are taken: a reader arriving meanwhile goes in."""
    backend = _SlowReads()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    grow(repo, tmp_path / "src", 12)
    backend.delay = 0.2
    merged: list[int] = []
    t = threading.Thread(target=lambda: merged.append(repo.compact_index()))
    t.start()
    time.sleep(0.3)
    started = time.monotonic()
    with lock.read_lock(backend, "checkout"):
        waited = time.monotonic() - started
        t.join()  # the reader is still there when the compaction has read its files
    assert waited < 1.0
    assert merged == [0], "the compaction went on while a reader held the repository"
    backend.delay = 0.0
    assert repo.compact_index() > 0


class _Busy(MemoryBackend):
    """Another process commits, and compacts, whenever the index folder is listed."""

    hook: object = None

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        hook, self.hook = self.hook, None
        if prefix == "index" and callable(hook):
            try:
                hook()
            finally:
                self.hook = hook
        else:
            self.hook = hook
        return super().list(prefix)


def test_the_keyless_check_is_clean_while_others_compact(small_bounds: None, tmp_path: Path) -> None:
    backend = _Busy()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    grow(repo, tmp_path / "src", MOST)
    done = [MOST]

    def another_process_commits() -> None:
        other = reopen(backend)
        grow(other, tmp_path / "src", 2, start=done[0])
        done[0] += 2
        other.compact_index()

    backend.hook = another_process_commits
    report = check.verify_structure(backend)
    backend.hook = None
    assert report.ok, report.damage


def test_a_local_listing_raced_by_a_compaction_loses_nothing(
    small_bounds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LocalBackend.list skips a file deleted between its scandir and its stat, and the merged file came
    after the scandir: the refs changed during the load, so it reads again and finds the merged file."""
    from strongroom.backends import local
    from strongroom.backends.local import LocalBackend

    backend = LocalBackend(str(tmp_path / "repo"))
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    versions = grow(repo, tmp_path / "src", MOST + 2)
    before = indexed(backend)
    other, reader = reopen(backend), reopen(backend)
    real_scandir = local.os.scandir
    pending = [other.compact_index]

    class Scan:
        def __init__(self, path: str) -> None:
            self.inner = real_scandir(path)

        def __enter__(self) -> Scan:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

        def __iter__(self):  # type: ignore[no-untyped-def]
            yield from self.inner  # every name, before any is stat-ed
            if pending:
                pending.pop()()

    monkeypatch.setattr(local.os, "scandir", lambda p: Scan(p) if str(p).endswith("/index") else real_scandir(p))
    idx = reader.load_index()
    monkeypatch.setattr(local.os, "scandir", real_scandir)
    assert not pending, "the compaction did not run under the listing"
    assert not idx.bad_files
    assert {oid: (loc.pack_id, loc.offset, loc.length) for oid, loc in idx.locations.items()} == before
    reader._index = idx
    for v in versions:
        reader.load_commit(v)


def test_a_failed_compaction_leaves_the_commit_standing_and_says_so(
    small_bounds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sr = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(5000))

    def failing(self: Repository) -> int:
        raise BackendError("writing index/x: No space left on device")

    monkeypatch.setattr(Repository, "compact_index", failing)
    res = sr.commit(str(src), message="v1", workers=1)
    assert any("merging the index files failed" in n and "No space left" in n for n in res.notes)
    assert [c.id for c in sr.log()] == [res.id]


class _Handover(MemoryBackend):
    """The exclusive lock is released and taken again by another holder just as it is read."""

    vanish_once = False

    def get(self, name: str) -> bytes:
        if name == lock.EXCLUSIVE and self.vanish_once:
            self.vanish_once = False
            from strongroom.backends.base import ObjectMissing

            raise ObjectMissing(name)
        return super().get(name)


def test_a_lock_handed_over_as_it_is_read_is_read_again() -> None:
    backend = _Handover()
    _hold(backend, lock.EXCLUSIVE, lock.COMPACTING)
    backend.vanish_once = True
    holder = lock.read_holder(backend, lock.EXCLUSIVE)
    assert holder is not None and holder.command == lock.COMPACTING


class _AlwaysCommitting(MemoryBackend):
    """Another process publishes refs between any two reads of them, without end."""

    busy = False

    def get(self, name: str) -> bytes:
        data = super().get(name)
        return data + os.urandom(8) if self.busy and name == "refs" else data


def test_an_index_load_under_refs_that_never_settle_takes_a_reader_lock(small_bounds: None, tmp_path: Path) -> None:
    backend = _AlwaysCommitting()
    repo = Repository.create(backend, secret(), UNSAFE_TEST_ONLY)
    grow(repo, tmp_path / "src", 3)
    before = indexed(backend)
    reader = reopen(backend)
    locks_taken: list[str] = []
    put = backend.put

    def recording_put(name: str, data: bytes | memoryview) -> None:
        if name.startswith("locks/read-"):
            locks_taken.append(name)
        put(name, data)

    backend.put = recording_put  # type: ignore[method-assign]
    backend.busy = True
    idx = reader.load_index()
    backend.busy = False
    assert locks_taken, "the last read of the index was not made under a reader lock"
    assert {oid: (loc.pack_id, loc.offset, loc.length) for oid, loc in idx.locations.items()} == before


def test_a_commit_waits_for_a_compaction_holding_the_publish_lock_but_not_for_a_commit(tmp_path: Path) -> None:
    """A compaction takes the publish lock for a moment after someone else's commit: a commit arriving then
    (with the default --wait 0) waits for it instead of failing. Another commit's lock, an old compaction
    lock, and a compaction's own attempt are refused at once, as before."""
    backend = MemoryBackend()
    for command, age_s in (("commit", 0), (lock.COMPACTING, lock.COMPACTION_STALE_S + 5)):
        _hold(backend, lock.PUBLISH, command)
        if age_s:
            record = json.loads(backend.get(lock.PUBLISH))
            backend.put(lock.PUBLISH, json.dumps(dict(record, time_ns=record["time_ns"] - int(age_s * 1e9))).encode())
        t0 = time.monotonic()
        with pytest.raises(RepositoryLocked), lock.publish_lock(backend, "commit"):
            pass
        assert time.monotonic() - t0 < 1
        backend.delete(lock.PUBLISH)

    _hold(backend, lock.PUBLISH, lock.COMPACTING)
    with pytest.raises(RepositoryLocked), lock.publish_lock(backend, lock.COMPACTING):
        pass  # a second compaction skips: it is never worth waiting for
    entered = threading.Event()

    def committer() -> None:
        with lock.publish_lock(backend, "commit"):
            entered.set()

    t = threading.Thread(target=committer)
    t.start()
    time.sleep(0.3)
    assert not entered.is_set(), "a commit published while a compaction held the lock"
    backend.delete(lock.PUBLISH)
    t.join(5)
    assert entered.is_set(), "a commit gave up on a compaction's moment"
