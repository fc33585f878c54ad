"""Guided chunking: for a file whose previous chunk list is known, ``cut_fd_guided`` gives exactly the chunks
and ids of ``cut_fd`` plus hashing, whatever the edits and whatever the list (even a wrong one), and it skips
the gear hash over the chunks that did not change."""

from __future__ import annotations

import itertools
import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.store import chunker as chunker_mod
from strongroom.store.chunker import Chunker, ChunkerParams
from tests.unit.store.test_chunker import READ, SMALL, data_of

KEY = bytes(range(32))
Pairs = list[tuple[bytes, bytes]]


def hasher(data: bytes | memoryview) -> bytes:
    return bytes(blake3.blake3(data, key=KEY).digest())


def previous_of(ch: Chunker, data: bytes) -> list[tuple[bytes, int]]:
    return [(hasher(c), len(c)) for c in ch.cut(data)]


def plain(ch: Chunker, path: Path) -> Pairs:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(bytes(c), hasher(c)) for c in ch.cut_fd(fd)]
    finally:
        os.close(fd)


def guided(ch: Chunker, path: Path, previous: Sequence[tuple[bytes, int]]) -> Pairs:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(bytes(c), cid) for c, cid in ch.cut_fd_guided(fd, hasher, previous)]
    finally:
        os.close(fd)


def check(ch: Chunker, path: Path, data: bytes, previous: Sequence[tuple[bytes, int]]) -> chunker_mod.GuideStats:
    """Guided equals plain; the byte counts add up. Returns the counts."""
    path.write_bytes(data)
    want = plain(ch, path)
    assert guided(ch, path, previous) == want
    stats = ch.guide_stats
    assert stats.cdc_bytes + stats.verified_bytes == len(data)
    assert stats.hashed_bytes >= len(data)
    return stats


EDITS = ("append", "truncate", "overwrite", "insert", "delete", "prepend", "replace")


def edit(ch: Chunker, data: bytes, kind: str, where: float, size: int, seed: int, runs: bool,
         snap: int | None) -> bytes:
    """One edit at a fraction ``where`` of the data or, with ``snap``, that many bytes from a cut point: the
    byte after a chunk decides its cut, and the cut rule changes near the end of the file."""
    at = int(where * len(data))
    if snap is not None:
        cuts = list(itertools.accumulate(len(c) for c in ch.cut(data)))
        at = min(max(cuts[int(where * (len(cuts) - 1))] + snap, 0), len(data)) if cuts else 0
    new = data_of(size, seed, runs)
    if kind == "append":
        return data + new
    if kind == "truncate":
        return data[:at]
    if kind == "overwrite":
        return data[:at] + new[: len(data) - at] + data[at + size :]
    if kind == "insert":
        return data[:at] + new + data[at:]
    if kind == "delete":
        return data[:at] + data[at + size :]
    if kind == "prepend":
        return new + data
    return data_of(len(data), seed, runs)  # replace everything


sizes = st.one_of(
    st.just(0), st.integers(1, 2 * SMALL.min_size), st.integers(SMALL.min_size, 2 * SMALL.max_size),
    st.integers(2 * SMALL.max_size, 400_000),
)
edits = st.lists(
    st.tuples(st.sampled_from(EDITS), st.floats(0, 1), st.one_of(st.integers(1, 64), st.integers(1, 40_000)),
              st.integers(0, 2**32), st.one_of(st.none(), st.integers(-2, 2))),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=sizes, seed=st.integers(0, 2**32), runs=st.booleans(), changes=edits,
       chunker_seed=st.integers(1, 2**63 - 1))
def test_guided_equals_plain_after_edits(tmp_path: Path, size: int, seed: int, runs: bool,
                                         changes: list[tuple[str, float, int, int, int | None]],
                                         chunker_seed: int) -> None:
    base = data_of(size, seed, runs)
    data = base
    for kind, where, n, s, snap in changes:
        data = edit(Chunker(SMALL, chunker_seed), data, kind, where, n, s, runs, snap)
    for read_size in (READ, chunker_mod.READ_SIZE):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(chunker_mod, "READ_SIZE", read_size)
            ch = Chunker(SMALL, chunker_seed)
            previous = previous_of(ch, base)
            check(ch, tmp_path / "f", data, previous)
            check(ch, tmp_path / "f", base, previous)  # the unchanged file, on the same (reused) buffer


@pytest.mark.parametrize("runs", [False, True])
def test_edits_next_to_cut_points(small_reads: None, tmp_path: Path, runs: bool) -> None:
    """The byte right after a chunk decides whether it is cut there, and the cut rule changes within max_size
    of the end of the file: edits of one byte at, before and after cut points (first, middle, last ones), and
    truncations there, with and without something appended."""
    for seed in range(3):
        data = data_of(150_000, seed, runs)
        ch = Chunker(SMALL, 31 + seed)
        previous = previous_of(ch, data)
        cuts = list(itertools.accumulate(n for _, n in previous))[:-1]
        for at in sorted({*cuts[:2], cuts[len(cuts) // 2], *cuts[-3:]}):
            for delta in (-2, -1, 0, 1, 2):
                i = at + delta
                flipped = bytes([data[i] ^ 0x5A])
                for changed in (
                    data[:i] + flipped + data[i + 1 :],
                    data[:i] + flipped + data[i:],
                    data[:i] + data[i + 1 :],
                    data[:i],
                    data[:i] + data_of(SMALL.max_size // 2, seed + i),
                    data[:i] + data[i:][::-1],
                ):
                    check(ch, tmp_path / "f", changed, previous)


def test_reads_that_end_at_cut_points(tmp_path: Path) -> None:
    """A read that ends right at, before or after the end of a chunk whose next byte changed (the chunk before
    it changed too, or not): the look-ahead must not take the end of the buffer for the end of the file."""
    data = data_of(200_000, 5)
    ch = Chunker(SMALL, 9)
    previous = previous_of(ch, data)
    cuts = list(itertools.accumulate(n for _, n in previous))
    picks = [i for i, c in enumerate(cuts[:-1]) if c >= 2 * SMALL.max_size + 2]
    for i in picks[:3] + picks[len(picks) // 2 : len(picks) // 2 + 2]:
        at, before = cuts[i], (cuts[i - 2] + cuts[i - 1]) // 2  # the start of a chunk, the middle of the one before
        flipped = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
        for changed in (flipped, flipped[:before] + bytes([data[before] ^ 1]) + flipped[before + 1 :], data):
            for delta in (-2, -1, 0, 1, 2):
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(chunker_mod, "READ_SIZE", at + delta - SMALL.max_size)  # the buffer ends at at + delta
                    check(Chunker(SMALL, 9), tmp_path / "f", changed, previous)


def garbage_of(rnd: random.Random, good: list[tuple[bytes, int]], size: int) -> list[tuple[bytes, int]]:
    kind = rnd.randrange(5)
    if kind == 0:  # random ids and lengths, often past the end of the file
        return [(rnd.randbytes(32), rnd.randint(0, 3 * SMALL.max_size)) for _ in range(rnd.randint(1, 60))]
    if kind == 1:  # the right lengths with wrong ids
        return [(rnd.randbytes(32), n) for _, n in good]
    if kind == 2:  # right ids, lengths shifted or zeroed
        return [(cid, rnd.choice([0, n - 1, n + 1, n, -n])) for cid, n in good]
    if kind == 3:  # the list shuffled, duplicated, cut short, with zero-length entries
        out = good[: rnd.randint(0, len(good))] * rnd.randint(1, 3) + [(hasher(b""), 0)] * 3
        rnd.shuffle(out)
        return out
    return [(cid, n) for cid, n in good if rnd.random() < 0.5] + [(rnd.randbytes(32), size + 1)]  # holes


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=sizes, seed=st.integers(0, 2**32), runs=st.booleans(), other=st.integers(0, 2**32))
def test_guided_equals_plain_for_garbage_lists(small_reads: None, tmp_path: Path, size: int, seed: int,
                                               runs: bool, other: int) -> None:
    data = data_of(size, seed, runs)
    ch = Chunker(SMALL, 4242)
    rnd = random.Random(other)
    good = previous_of(ch, data_of(size, other, runs) if rnd.random() < 0.3 else data)
    stats = check(ch, tmp_path / "f", data, garbage_of(rnd, good, size))
    if size:
        assert stats.hashed_bytes - size <= 6 * SMALL.max_size + size // 8


@pytest.mark.parametrize("previous", [[], [(b"", 0)], [(b"x" * 32, 1 << 40)], [(b"y" * 32, -5)]])
def test_guided_with_empty_or_absurd_lists(tmp_path: Path, previous: list[tuple[bytes, int]]) -> None:
    ch = Chunker(SMALL, 3)
    for size in (0, 1, 5000, 120_000):
        stats = check(ch, tmp_path / "f", data_of(size, size), previous)
        assert stats.verified_bytes == 0


def test_unchanged_file_is_all_verified(tmp_path: Path) -> None:
    for runs in (False, True):
        data = data_of(1_000_000, 17, runs)
        ch = Chunker(SMALL, 99)
        stats = check(ch, tmp_path / "f", data, previous_of(ch, data))
        assert (stats.cdc_bytes, stats.verified_bytes, stats.hashed_bytes) == (0, len(data), len(data))


@pytest.mark.parametrize("runs", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_edits_skip_the_gear_hash(small_reads: None, tmp_path: Path, seed: int, runs: bool) -> None:
    """A few KB appended, 16 bytes overwritten, 100 bytes inserted or 5000 deleted in the middle of a file of
    about 500 chunks: the gear hash runs over the new chunks and at most one chunk on either side of them (the
    one before an edit waits for the next one to match; the first old chunk after an insertion or a deletion is
    found by its id); the hashing wastes less than two chunks."""
    data = data_of(2_000_000, seed, runs)
    ch = Chunker(SMALL, 1000 + seed)
    previous = previous_of(ch, data)
    mid = len(data) // 2 + seed * 777
    cases = {
        "append": data + data_of(3000, seed + 1),
        "overwrite": data[:mid] + b"sixteen bytes!!!" + data[mid + 16 :],
        "insert": data[:mid] + data_of(100, seed + 2) + data[mid:],
        "delete": data[:mid] + data[mid + 5000 :],
    }
    old_ids = {cid for cid, _ in previous}
    for name, changed in cases.items():
        stats = check(ch, tmp_path / "f", changed, previous)
        new_bytes = sum(len(c) for c, cid in guided(ch, tmp_path / "f", previous) if cid not in old_ids)
        assert stats.cdc_bytes <= new_bytes + 2 * SMALL.max_size, name
        if not runs:  # random bytes: edits stay within a chunk or two
            assert stats.cdc_bytes <= 3 * SMALL.max_size, name
        assert stats.hashed_bytes - len(changed) <= 2 * SMALL.max_size, name


def test_guided_at_the_real_read_size(tmp_path: Path) -> None:
    """The default read size: edits on both sides of the first refill."""
    size = chunker_mod.READ_SIZE + 5 * SMALL.max_size
    data = data_of(size, 8)
    ch = Chunker(SMALL, 55)
    previous = previous_of(ch, data)
    for at in (chunker_mod.READ_SIZE - 3000, chunker_mod.READ_SIZE + 10):
        stats = check(ch, tmp_path / "f", data[:at] + b"!" * 16 + data[at + 16 :], previous)
        assert stats.cdc_bytes <= 3 * SMALL.max_size
    stats = check(ch, tmp_path / "f", data + b"tail" * 1000, previous)
    assert stats.cdc_bytes <= 2 * SMALL.max_size


def test_guided_over_a_pipe(tmp_path: Path) -> None:
    """Short reads (a pipe hands over 64 KiB at a time) give the same chunks."""
    data = data_of(600_000, 21, runs=True)
    ch = Chunker(SMALL, 8)
    previous = previous_of(ch, data[:300_000] + data[300_100:])
    (tmp_path / "f").write_bytes(data)
    want = plain(ch, tmp_path / "f")
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        got = [(bytes(c), cid) for c, cid in ch.cut_fd_guided(r, hasher, previous)]
    finally:
        writer.join()
        os.close(r)
    assert got == want
    assert ch.guide_stats.verified_bytes > len(data) // 2


def test_params_at_the_bounds(tmp_path: Path) -> None:
    """Odd and equal sizes: min = avg = max, and odd min and max."""
    for params in (ChunkerParams(1024, 1024, 1024), ChunkerParams(1023, 2048, 4097), ChunkerParams(64, 256, 1024)):
        ch = Chunker(params, 5)
        for seed in range(4):
            data = data_of(50_000 + seed * 997, seed, runs=seed % 2 == 1)
            previous = previous_of(ch, data)
            for changed in (data, data[:-7], data + b"z" * 1500, data[:20_000] + b"x" + data[20_001:],
                            data[:20_000] + data[20_003:]):
                check(ch, tmp_path / "f", changed, previous)


@pytest.fixture
def small_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunker_mod, "READ_SIZE", READ)
