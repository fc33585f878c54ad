"""Writes and reads past the page cache (O_DIRECT) give back exactly the bytes, at any size and offset."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.backends import directio
from strongroom.backends.directio import ALIGN, DIRECT_MIN, SequentialWriter, read_range, write_file

SIZES = st.one_of(
    st.integers(0, 3 * DIRECT_MIN),
    st.sampled_from([DIRECT_MIN - 1, DIRECT_MIN, DIRECT_MIN + 1, 4 * ALIGN * 300, (16 << 20) + 1]),
)


def _new(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _direct_supported(folder: Path) -> bool:
    fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return directio._set_direct(fd, True)
    finally:
        os.close(fd)
        os.unlink(folder / "probe")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=SIZES, seed=st.integers(0, 2**32))
def test_write_file_round_trip(tmp_path: Path, size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    path = tmp_path / f"f{seed}-{size}"
    fd = _new(path)
    try:
        write_file(fd, data)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_sequential_writer_joins_pieces_across_its_buffer(tmp_path: Path) -> None:
    rng = random.Random(7)
    pieces = [rng.randbytes(rng.choice([1, 4095, 4096, 70_001, 3 << 20])) for _ in range(20)]
    path = tmp_path / "joined"
    fd = _new(path)
    try:
        w = SequentialWriter(fd, direct=True)
        for p in pieces:
            w.write(p)
        w.close()
        os.write(fd, b"after close the file is an ordinary one")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(pieces) + b"after close the file is an ordinary one"


def test_large_write_leaves_the_page_cache_alone(tmp_path: Path) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT: writes go through the cache, as they must")
    path = tmp_path / "pack"
    fd = _new(path)
    try:
        write_file(fd, os.urandom(8 << 20))
        os.fsync(fd)
    finally:
        os.close(fd)
    # The bulk went to the device, not into fresh cache pages: a read told not to wait finds nothing.
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    finally:
        os.close(fd)


def test_forked_workers_never_share_a_buffer(tmp_path: Path) -> None:
    """The aligned buffers are per process: a child writing through its own must not change the parent's
    (an anonymous mapping is shared across fork unless it is private)."""
    parent_data = b"P" * (2 << 20)
    mine = tmp_path / "parent"
    fd = _new(mine)
    w = SequentialWriter(fd, direct=True)
    w.write(parent_data[: 1 << 20])  # half of it waits in this process's buffer
    pid = os.fork()
    if pid == 0:  # the child writes its own file through the same code path, then leaves at once
        code = 1
        try:
            cfd = _new(tmp_path / "child")
            cw = SequentialWriter(cfd, direct=True)
            cw.write(b"C" * (3 << 20))
            cw.close()
            os.close(cfd)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    w.write(parent_data[1 << 20 :])
    w.close()
    os.close(fd)
    assert mine.read_bytes() == parent_data
    assert (tmp_path / "child").read_bytes() == b"C" * (3 << 20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, 6 << 20), length=st.integers(0, 4 << 20), warm=st.booleans())
def test_read_range_matches_pread(tmp_path: Path, offset: int, length: int, warm: bool) -> None:
    path = tmp_path / "cold"
    if not path.exists():
        fd = _new(path)
        try:
            write_file(fd, random.Random(1).randbytes((5 << 20) + 777))
            os.fsync(fd)
        finally:
            os.close(fd)
    expected = path.read_bytes()[offset : offset + length]
    fd = os.open(path, os.O_RDONLY)
    try:
        if warm:
            os.pread(fd, 8 << 20, 0)  # in the cache: still read from the device, still the same bytes
        else:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert read_range(fd, offset, length) == expected
        assert read_range(fd, offset, length) == expected  # the descriptor still reads after a direct read
    finally:
        os.close(fd)
