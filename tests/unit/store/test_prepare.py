"""store.ingest.prepare_files, which reads a watched folder's files ahead of its commit: a file written too
recently is left for later (an entry recorded now could hold part of a write still being copied), a file
already in the cache is read again (a change was heard), a stop request leaves the file being read
unrecorded, and nothing it stores is published."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from strongroom.backends.local import LocalBackend
from strongroom.core.ignore import IgnoreRules
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.secret import Secret
from strongroom.store.chunker import Chunker
from strongroom.store.filecache import RACY_WINDOW_NS, FileCache
from strongroom.store.ingest import CommitRequest, commit_folder, prepare_files
from strongroom.store.repository import Repository
from tests.conftest import make_tree


def _setup(tmp_path: Path, files: dict[str, bytes], aged: bool = True) -> tuple[Repository, Path, FileCache]:
    """A repository, a folder holding ``files`` (their stamps past the racy-clean second unless not aged),
    and the folder's empty file cache."""
    repo = Repository.create(LocalBackend(str(tmp_path / "repo")), Secret(b"pw"), UNSAFE_TEST_ONLY)
    data = make_tree(tmp_path / "data", files)
    if aged:
        time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)
    return repo, data, FileCache(str(tmp_path / "cache"), repo.sealer, repo.context)


def test_files_are_recorded_in_the_cache_and_their_packs_stay_unpublished(tmp_path: Path) -> None:
    repo, data, cache = _setup(tmp_path, {"a.bin": os.urandom(100_000)})
    done = prepare_files(repo, str(data), ["a.bin", "missing.bin"], cache, IgnoreRules([]), set())
    assert (done.files_read, done.bytes_read, done.later) == (1, 100_000, [])
    reloaded = FileCache(cache.path, repo.sealer, repo.context)
    reloaded.load()
    st = os.stat(data / "a.bin")
    chunks = reloaded.lookup("a.bin", st, time.time_ns())
    assert chunks is not None
    assert repo.read_refs().index_files == ()  # nothing published
    fresh = Repository.open(repo.backend, Secret(b"pw"))
    assert not any(fresh.index.has(c, 1) for c in chunks)
    assert fresh.adopt_orphan_packs()  # a commit finds the packs as orphans ...
    assert all(fresh.index.has(c, 1) for c in chunks)  # ... holding every chunk the entry names


def test_a_file_written_just_now_is_left_for_later(tmp_path: Path) -> None:
    repo, data, cache = _setup(tmp_path, {"hot.bin": b"x" * 1000}, aged=False)
    done = prepare_files(repo, str(data), ["hot.bin"], cache, IgnoreRules([]), set())
    assert (done.files_read, done.later) == (0, ["hot.bin"])
    assert cache.entries == {}


def test_a_stop_leaves_the_file_being_read_for_later(tmp_path: Path) -> None:
    big = {name: os.urandom(12 << 20) for name in ("a.bin", "b.bin")}  # a dozen chunks or so each
    repo, data, cache = _setup(tmp_path, big)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2  # after a couple of chunks

    done = prepare_files(repo, str(data), ["a.bin", "b.bin"], cache, IgnoreRules([]), set(), stop)
    assert done.files_read == 0
    assert sorted(done.later) == ["a.bin", "b.bin"]
    assert cache.entries == {}


def test_ignored_paths_are_not_read(tmp_path: Path) -> None:
    repo, data, cache = _setup(tmp_path, {"tmp/x.bin": b"x", "s.env": b"secret", "k.bin": b"k"})
    rules = IgnoreRules(["tmp/", "*.env"])
    done = prepare_files(repo, str(data), ["tmp/x.bin", "s.env", "k.bin"], cache, rules, set())
    assert done.files_read == 1
    assert set(cache.entries) == {"k.bin"}


def test_a_file_already_in_the_cache_is_read_again(tmp_path: Path) -> None:
    """A change was heard for it: the entry may have been recorded while a write was still being copied, with
    the stat the file still has, so it is not an answer."""
    repo, data, cache = _setup(tmp_path, {"a.bin": os.urandom(50_000)})
    for _ in range(2):
        assert prepare_files(repo, str(data), ["a.bin"], cache, IgnoreRules([]), set()).files_read == 1


def test_a_changed_file_is_chunked_with_its_old_chunks_as_a_guide_and_as_if_read_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append and a small overwrite: the file's chunk list is exactly what chunking it afresh gives (so
    deduplication is unchanged), found by checking the chunks it had (Chunker.cut_fd_guided)."""
    original = os.urandom(12 << 20)  # a dozen chunks or so
    repo, data, cache = _setup(tmp_path, {"big.bin": original})
    prepare_files(repo, str(data), ["big.bin"], cache, IgnoreRules([]), set())
    before = cache.entries["big.bin"].chunks
    changed = bytearray(original)
    changed[6 << 20 : (6 << 20) + 16] = os.urandom(16)
    changed += os.urandom(100_000)
    (data / "big.bin").write_bytes(changed)
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)
    guided: list[int] = []
    real = Chunker.cut_fd_guided

    def counting(self: Chunker, *args: Any) -> Any:
        guided.append(len(args[2]))
        return real(self, *args)

    monkeypatch.setattr(Chunker, "cut_fd_guided", counting)
    prepare_files(repo, str(data), ["big.bin"], cache, IgnoreRules([]), set())
    after = cache.entries["big.bin"].chunks
    assert guided == [len(before)]
    afresh = [repo.hasher(c) for c in Chunker(repo.chunker_params, repo.chunker_seed).cut(bytes(changed))]
    assert list(after) == afresh
    assert len(set(before) & set(after)) >= len(before) - 3  # only the chunks around the two changes are new


def test_entries_of_files_gone_are_dropped_by_the_watch_and_by_the_commit(tmp_path: Path) -> None:
    """A folder whose files come and go (a checkpoint per step) keeps a cache of what is there: the read-ahead
    drops the entry of a file it hears is gone, and a commit rewrites a cache holding entries it no longer
    uses, even when every file it has is a cache hit."""
    repo, data, cache = _setup(tmp_path, {"keep.bin": b"k" * 5000, "a.bin": b"a" * 5000, "b.bin": b"b" * 5000})
    prepare_files(repo, str(data), ["keep.bin", "a.bin", "b.bin"], cache, IgnoreRules([]), set())
    assert set(cache.entries) == {"keep.bin", "a.bin", "b.bin"}
    (data / "a.bin").unlink()
    done = prepare_files(repo, str(data), ["a.bin"], cache, IgnoreRules([]), set())
    assert done.files_read == 0
    reloaded = FileCache(cache.path, repo.sealer, repo.context)
    reloaded.load()
    assert set(reloaded.entries) == {"keep.bin", "b.bin"}

    (data / "b.bin").unlink()  # not heard of: the commit finds it gone
    req = CommitRequest(source=str(data), branch="main", message="m", author="t", cache_path=cache.path)
    result = commit_folder(repo, req)
    assert result.files_read == 0  # keep.bin was a cache hit
    reloaded.load()
    assert set(reloaded.entries) == {"keep.bin"}


def test_a_folder_swapped_for_a_link_to_elsewhere_brings_nothing_from_outside(tmp_path: Path) -> None:
    """The watch heard sub/secret.txt; before it was read, sub became a symlink to a folder outside the
    watched one holding a file of the same name. Nothing of the outside file may be read or stored."""
    outside = make_tree(tmp_path / "outside", {"secret.txt": b"OUTSIDE-ONLY " * 1000})
    repo, data, cache = _setup(tmp_path, {"sub/secret.txt": b"inside\n"})
    os.rename(data / "sub", data / "sub-was")
    os.symlink(outside, data / "sub")
    done = prepare_files(repo, str(data), ["sub/secret.txt"], cache, IgnoreRules([]), set())
    assert (done.files_read, done.bytes_read) == (0, 0)
    assert "sub/secret.txt" not in cache.entries
    repo.adopt_orphan_packs()  # what a commit would take in: no chunk of the outside file
    assert not repo.index.has(repo.hasher(b"OUTSIDE-ONLY " * 1000), 1)
