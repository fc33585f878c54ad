"""File cache: an unchanged file (same size, inode, mtime, ctime) reuses its chunk list, except when its
mtime or ctime was not older than the time its stat was recorded by the filesystem's timestamp step (git's
racy-clean rule; entries without a recorded time use the scan's start). A damaged, foreign or missing cache
file is an empty cache, never an error."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from strongroom.crypto.aead import Sealer
from strongroom.store import filecache
from strongroom.store.filecache import RACY_WINDOW_NS, CachedFile, FileCache, racy_window_ns, window_for
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


@pytest.mark.parametrize("change", [{"size": 11}, {"ino": 8}, {"mtime": T0 + 1}, {"mtime": T0 - 1},
                                    {"ctime": T0 + 1}])
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


MS = 1_000_000
FINE = T0 + 123_456_789  # a stamp with a sub-second part: the filesystem keeps nanoseconds


@pytest.mark.parametrize("age_ns", [0, 5 * MS, 10 * MS])
def test_an_entry_recorded_too_soon_after_a_write_is_never_trusted(
    tmp_path: Path, sealer: Sealer, ctx: bytes, age_ns: int
) -> None:
    """A write in the same clock step as the recorded stat would leave the stamps unchanged: however late the
    scan, such an entry is not trusted (the file is read again, and recorded anew)."""
    c = FileCache(str(tmp_path / "c"), sealer, ctx)
    c.entries = {"f": CachedFile(10, 7, FINE, FINE, CHUNKS, recorded_ns=FINE + age_ns)}
    for scan in (FINE + SECOND, FINE + 3600 * SECOND):
        assert c.lookup("f", stat(mtime=FINE, ctime=FINE), scan, window_ns=10 * MS) is None
    c.entries = {"f": CachedFile(10, 7, FINE, FINE, CHUNKS, recorded_ns=FINE + 10 * MS + 1)}
    assert c.lookup("f", stat(mtime=FINE, ctime=FINE), FINE + SECOND, window_ns=10 * MS) == CHUNKS
    # ... but never ahead of the scan itself (a recorded time from a clock that ran ahead)
    assert c.lookup("f", stat(mtime=FINE, ctime=FINE), FINE + 5 * MS, window_ns=10 * MS) is None


def test_whole_second_stamps_get_the_one_second_window(tmp_path: Path, sealer: Sealer, ctx: bytes) -> None:
    """A filesystem that keeps whole seconds (ext4 with small inodes, FAT, some network mounts) can stamp a
    later write with the same second: a fine window is not enough there."""
    assert window_for(stat(mtime=T0, ctime=T0), 10 * MS) == RACY_WINDOW_NS
    assert window_for(stat(mtime=FINE, ctime=T0), 10 * MS) == 10 * MS
    c = FileCache(str(tmp_path / "c"), sealer, ctx)
    c.entries = {"f": CachedFile(10, 7, T0, T0, CHUNKS, recorded_ns=T0 + SECOND // 2)}
    assert c.lookup("f", stat(), T0 + 60 * SECOND, window_ns=10 * MS) is None


def test_the_fine_window_is_for_known_local_filesystems_only(tmp_path: Path) -> None:
    assert racy_window_ns("/proc") == RACY_WINDOW_NS  # procfs: not a filesystem we know the stamps of
    assert racy_window_ns(str(tmp_path / "missing")) == RACY_WINDOW_NS
    if filecache._fs_type(str(tmp_path)) in filecache._FINE_FILESYSTEMS:
        assert filecache.FINE_WINDOW_MIN_NS <= racy_window_ns(str(tmp_path)) < RACY_WINDOW_NS


def test_a_real_file_is_trusted_once_its_stamps_are_older_than_the_window(
    tmp_path: Path, sealer: Sealer, ctx: bytes
) -> None:
    window = racy_window_ns(str(tmp_path))
    f = tmp_path / "data.bin"
    f.write_bytes(b"x" * 10)
    time.sleep(window / 1e9 * 1.5)
    recorded = time.time_ns()
    st = os.stat(f)
    c = FileCache(str(tmp_path / "c"), sealer, ctx)
    c.entries = {"data.bin": CachedFile(st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, CHUNKS, recorded)}
    assert c.lookup("data.bin", os.stat(f), time.time_ns(), window) == CHUNKS
    f.write_bytes(b"y" * 10)  # same size, written right after: the stamps moved on
    assert c.lookup("data.bin", os.stat(f), time.time_ns(), window) is None


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
