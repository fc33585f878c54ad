"""File cache: an unchanged file (same size, inode, mtime, ctime) reuses its chunk list, except when its
mtime or ctime was not more than a second older than the time its stat was recorded (git's racy-clean rule;
entries without a recorded time use the scan's start). A damaged, foreign or missing cache
file is an empty cache, never an error."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from strongroom.crypto.aead import Sealer
from strongroom.store import filecache as filecache_module
from strongroom.store.filecache import RACY_WINDOW_NS, CachedFile, FileCache
from tests.unit.conftest import MakeSealer

SECOND = 1_000_000_000
CHUNKS = (b"\1" * 32, b"\2" * 32)
T0 = 1_700_000_000 * SECOND


def stat(size: int = 10, ino: int = 7, mtime: int = T0, ctime: int = T0) -> Any:
    return SimpleNamespace(st_size=size, st_ino=ino, st_mtime_ns=mtime, st_ctime_ns=ctime)


def cache_with(tmp_path: Path, sealer: Sealer, ctx: bytes, **entry: int) -> FileCache:
    c = FileCache(str(tmp_path / "cache" / "files"), sealer, ctx)
    st = stat(**entry)
    c.entries = {"a/b.bin": CachedFile(st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, CHUNKS)}
    return c


def test_unchanged_old_file_is_trusted(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    c = cache_with(tmp_path, sealer, ctx)
    assert c.lookup("a/b.bin", stat(), scan_start_ns=T0 + 60 * SECOND) == CHUNKS


def test_unknown_path_is_a_miss(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    c = cache_with(tmp_path, sealer, ctx)
    assert c.lookup("a/other.bin", stat(), T0 + 60 * SECOND) is None


@pytest.mark.parametrize("change", [{"size": 11}, {"ino": 8}, {"mtime": T0 + 1}, {"mtime": T0 - 1}, {"ctime": T0 + 1}])
def test_any_metadata_change_is_a_miss(tmp_path: Path, sealer: Sealer, ctx: bytes, change: dict[str, int]) -> None:
    c = cache_with(tmp_path, sealer, ctx)
    assert c.lookup("a/b.bin", stat(**change), T0 + 60 * SECOND) is None


@pytest.mark.parametrize("field", ["mtime", "ctime"])
def test_racy_clean_files_are_re_read(tmp_path: Path, sealer: Sealer, ctx: bytes, field: str) -> None:
    """A write in the same second as the scan could leave mtime unchanged: such a file is never trusted."""
    c = cache_with(tmp_path, sealer, ctx)
    other = "ctime" if field == "mtime" else "mtime"
    for age_ns in (0, 1, SECOND // 2, RACY_WINDOW_NS):
        scan = T0 + age_ns
        # same metadata as cached, the other timestamp safely old
        entry = {field: T0, other: T0 - 10 * SECOND}
        c = cache_with(tmp_path, sealer, ctx, **entry)
        assert c.lookup("a/b.bin", stat(**entry), scan) is None, age_ns
    entry = {field: T0, other: T0 - 10 * SECOND}
    c = cache_with(tmp_path, sealer, ctx, **entry)
    assert c.lookup("a/b.bin", stat(**entry), T0 + RACY_WINDOW_NS + 1) == CHUNKS


def test_file_from_the_future_is_not_trusted(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    c = cache_with(tmp_path, sealer, ctx, mtime=T0 + 3600 * SECOND)
    assert c.lookup("a/b.bin", stat(mtime=T0 + 3600 * SECOND), T0) is None


def test_real_file_just_written_is_racy(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(b"x" * 10)
    st = os.stat(f)
    c = FileCache(str(tmp_path / "c"), sealer, ctx)
    c.entries = {"data.bin": CachedFile(st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, CHUNKS)}
    assert c.lookup("data.bin", os.stat(f), time.time_ns()) is None
    assert c.lookup("data.bin", os.stat(f), time.time_ns() + 2 * SECOND) == CHUNKS


@pytest.mark.parametrize("age_ns", [0, SECOND // 100, SECOND // 2, RACY_WINDOW_NS])
def test_an_entry_recorded_too_soon_after_a_write_is_never_trusted(
    tmp_path: Path, sealer: Sealer, ctx: bytes, age_ns: int
) -> None:
    """A file's stamps are set when a write starts: an entry recorded within a second of them could hold part
    of a write still being copied, under the stat the file keeps once it ends. However late the scan, such an
    entry is not trusted (the file is read again, and recorded anew)."""
    c = FileCache(str(tmp_path / "c"), sealer, ctx)
    c.entries = {"f": CachedFile(10, 7, T0, T0, CHUNKS, recorded_ns=T0 + age_ns)}
    for scan in (T0 + 2 * SECOND, T0 + 3600 * SECOND):
        assert c.lookup("f", stat(), scan) is None
    c.entries = {"f": CachedFile(10, 7, T0, T0, CHUNKS, recorded_ns=T0 + RACY_WINDOW_NS + 1)}
    assert c.lookup("f", stat(), T0 + 2 * SECOND) == CHUNKS
    # ... and never ahead of the scan itself (a recorded time from a clock that ran ahead)
    assert c.lookup("f", stat(), T0 + SECOND // 2) is None


def test_an_older_cache_without_recorded_times_still_loads(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    import json

    import zstandard

    from strongroom.core.ids import ObjectKind

    path = tmp_path / "files"
    old = {"a": [1, 2, 3, 4, [CHUNKS[0].hex()]]}
    plain = zstandard.ZstdCompressor().compress(json.dumps(old).encode())
    path.write_bytes(sealer.seal(plain, ObjectKind.FILECACHE, ctx))
    c = FileCache(str(path), sealer, ctx)
    c.load()
    assert c.entries == {"a": CachedFile(1, 2, 3, 4, (CHUNKS[0],), 0)}


def test_save_load_round_trip(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    path = str(tmp_path / "cache" / "repo" / "files-x")
    entries = {
        "a": CachedFile(1, 2, 3, 4, CHUNKS, recorded_ns=T0),
        "dir/é\udcff": CachedFile(0, 9, -5, 6, ()),
    }
    FileCache(path, sealer, ctx).save(entries)
    c = FileCache(path, sealer, ctx)
    c.load()
    assert c.entries == entries
    assert os.listdir(os.path.dirname(path)) == ["files-x"]  # no temp file left


def test_cache_file_names_no_path_in_clear(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    path = tmp_path / "files"
    FileCache(str(path), sealer, ctx).save({"patients/john-doe.dcm": CachedFile(1, 2, 3, 4, CHUNKS)})
    assert b"john-doe" not in path.read_bytes()


def test_missing_cache_is_empty(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    c = FileCache(str(tmp_path / "nope"), sealer, ctx)
    c.load()
    assert c.entries == {}


def test_tampered_cache_is_empty_not_an_error(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    path = tmp_path / "files"
    FileCache(str(path), sealer, ctx).save({"a": CachedFile(1, 2, 3, 4, CHUNKS)})
    good = path.read_bytes()
    for pos in range(0, len(good), max(1, len(good) // 40)):
        bad = bytearray(good)
        bad[pos] ^= 0x01
        path.write_bytes(bytes(bad))
        c = FileCache(str(path), sealer, ctx)
        c.load()
        assert c.entries == {}
    for data in (b"", good[:10], b"garbage" * 10):
        path.write_bytes(data)
        c = FileCache(str(path), sealer, ctx)
        c.load()
        assert c.entries == {}


def test_cache_of_another_repository_or_key_is_empty(tmp_path: Path, make_sealer: MakeSealer, ctx: bytes) -> None:
    path = str(tmp_path / "files")
    s = make_sealer()
    FileCache(path, s, ctx).save({"a": CachedFile(1, 2, 3, 4, CHUNKS)})
    for sealer, context in ((s, os.urandom(32)), (make_sealer(), ctx)):
        c = FileCache(path, sealer, context)
        c.load()
        assert c.entries == {}


def test_well_sealed_but_malformed_contents_are_empty(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    import zstandard

    from strongroom.core.ids import ObjectKind

    path = tmp_path / "files"
    for raw in (b"[]", b'{"a": [1]}', b'{"a": [1, 2, 3, 4, ["zz"]]}', b'{"a": 5}', b"not json"):
        path.write_bytes(sealer.seal(zstandard.ZstdCompressor().compress(raw), ObjectKind.FILECACHE, ctx))
        c = FileCache(str(path), sealer, ctx)
        c.load()
        assert c.entries == {}, raw


def test_a_kept_cache_loads_the_same_until_its_bytes_change(kept_parses: None, tmp_path: Path,
                                                             make_sealer: MakeSealer, ctx: bytes) -> None:
    sealer = make_sealer()
    c = cache_with(tmp_path, sealer, ctx)
    c.save(c.entries)
    again = FileCache(c.path, make_sealer(), ctx)  # another key could not open it: it was not opened
    again.load()
    assert again.entries == c.entries
    again.entries.clear()  # a copy: the kept entries are not changed through it
    other = FileCache(c.path, sealer, ctx)
    other.load()
    assert other.entries == c.entries

    kept = dict(filecache_module._loaded or {})
    writer = cache_with(tmp_path, sealer, ctx, size=99)
    writer.save(writer.entries)
    filecache_module._loaded = kept  # as if another process had saved it: what this one kept is now stale
    fresh = FileCache(c.path, sealer, ctx)
    fresh.load()
    assert fresh.entries["a/b.bin"].size == 99


def test_kept_caches_are_bounded(kept_parses: None, tmp_path: Path, sealer: Sealer, ctx: bytes,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filecache_module, "KEPT_CACHES", 2)
    for name in ("one", "two", "three"):
        c = FileCache(str(tmp_path / name), sealer, ctx)
        c.save({})
    assert [path for path, _ in filecache_module._loaded or {}] == [str(tmp_path / "two"), str(tmp_path / "three")]


def test_caches_kept_from_many_threads_at_once_stay_bounded(
    kept_parses: None, tmp_path: Path, sealer: Sealer, ctx: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's watch threads and its command thread save caches at once: evicting the oldest while another
    thread keeps one must neither fail nor overrun the bound."""
    monkeypatch.setattr(filecache_module, "KEPT_CACHES", 4)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    errors: list[BaseException] = []

    def keep_many(t: int) -> None:
        try:
            for i in range(60):
                FileCache(str(tmp_path / f"t{t}-{i}"), sealer, ctx)._keep(b"x", {})
        except BaseException as e:  # the test reports whatever a thread raised
            errors.append(e)

    try:
        for _ in range(20):  # one round shows the race about one time in three without the lock
            threads = [threading.Thread(target=keep_many, args=(t,)) for t in range(6)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert errors == []
    assert len(filecache_module._loaded or {}) == 4
