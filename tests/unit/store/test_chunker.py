"""Content-defined chunking: reading a file in bounded pieces gives exactly the cuts of the whole buffer;
sizes stay within [min, max]; the secret seed moves the cut points."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.store import chunker as chunker_mod
from strongroom.store.chunker import Chunker, ChunkerParams

SMALL = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)
READ = 20_000  # a read size that is not a multiple of anything the chunker uses


def data_of(size: int, seed: int, runs: bool = False) -> bytes:
    rnd = random.Random(seed)
    if not runs:
        return rnd.randbytes(size)
    # long runs of one byte: cuts at max_size, the case where a held-back chunk meets the buffer's end
    out = bytearray()
    while len(out) < size:
        out += (rnd.randbytes(rnd.randint(1, 3000)) if rnd.random() < 0.5 else bytes([rnd.randrange(256)]) *
                rnd.randint(1, 40_000))
    return bytes(out[:size])


def cuts_of_fd(ch: Chunker, path: Path) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [bytes(c) for c in ch.cut_fd(fd)]
    finally:
        os.close(fd)


@pytest.fixture
def small_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunker_mod, "READ_SIZE", READ)


sizes = st.one_of(
    st.just(0), st.integers(1, SMALL.min_size - 1), st.integers(SMALL.min_size, SMALL.max_size),
    st.integers(READ - 10, READ + SMALL.max_size + 10), st.integers(2 * READ, 6 * READ),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=sizes, seed=st.integers(0, 2**32), runs=st.booleans(), chunker_seed=st.integers(1, 2**63 - 1))
def test_cut_fd_equals_cut_of_the_whole_buffer(small_reads: None, tmp_path: Path, size: int, seed: int,
                                               runs: bool, chunker_seed: int) -> None:
    data = data_of(size, seed, runs)
    path = tmp_path / "f"
    path.write_bytes(data)
    ch = Chunker(SMALL, chunker_seed)
    whole = [bytes(c) for c in ch.cut(data)]
    streamed = cuts_of_fd(ch, path)
    assert streamed == whole
    assert b"".join(streamed) == data
    # the read buffer is reused across files: a second file must not see the first one's bytes
    other = data_of(size // 2, seed + 1, runs)
    path.write_bytes(other)
    assert cuts_of_fd(ch, path) == [bytes(c) for c in ch.cut(other)]


def test_cut_fd_at_the_real_read_size(tmp_path: Path) -> None:
    """The default read size (no monkeypatching): a file spanning two reads."""
    data = data_of(chunker_mod.READ_SIZE + 3 * SMALL.max_size + 17, 7)
    path = tmp_path / "big"
    path.write_bytes(data)
    ch = Chunker(SMALL, 12345)
    assert cuts_of_fd(ch, path) == [bytes(c) for c in ch.cut(data)]


def test_empty_input_has_no_chunks(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    ch = Chunker(SMALL, 1)
    assert list(ch.cut(b"")) == []
    assert cuts_of_fd(ch, tmp_path / "empty") == []


@settings(max_examples=20, deadline=None)
@given(size=st.integers(0, 200_000), seed=st.integers(0, 2**32), runs=st.booleans())
def test_chunk_sizes_within_bounds(size: int, seed: int, runs: bool) -> None:
    data = data_of(size, seed, runs)
    chunks = [len(c) for c in Chunker(SMALL, 99).cut(data)]
    assert sum(chunks) == size
    assert all(SMALL.min_size <= n <= SMALL.max_size for n in chunks[:-1])
    if chunks:
        assert 0 < chunks[-1] <= SMALL.max_size


def test_cut_points_are_content_defined() -> None:
    """An insertion near the start shifts content, but the cut points after it resynchronise (dedup)."""
    data = data_of(400_000, 3)
    ch = Chunker(SMALL, 77)
    before = {bytes(c) for c in ch.cut(data)}
    after = {bytes(c) for c in ch.cut(data[:5000] + b"inserted!" + data[5000:])}
    assert len(before & after) >= len(before) - 4


def test_different_seeds_give_different_cuts() -> None:
    data = data_of(1 << 20, 11)

    def offsets(seed: int) -> list[int]:
        out, off = [], 0
        for c in Chunker(SMALL, seed).cut(data):
            off += len(c)
            out.append(off)
        return out

    rnd = random.Random(5)
    seeds = [rnd.randrange(1, 2**47) for _ in range(6)]
    results = [offsets(s) for s in seeds]
    for i in range(len(seeds)):
        assert offsets(seeds[i]) == results[i]  # deterministic for a seed
        for j in range(i + 1, len(seeds)):
            shared = set(results[i]) & set(results[j])
            assert len(shared) < len(results[i]) // 4, (seeds[i], seeds[j])


def test_params_name_round_trip() -> None:
    assert ChunkerParams().name == "fastcdc/256K-768K-4096K"
    for p in (ChunkerParams(), SMALL, ChunkerParams(64 << 10, 256 << 10, 1 << 20)):
        assert ChunkerParams.parse(p.name) == p


@pytest.mark.parametrize("name", ["", "fastcdc", "rabin/1K-2K-4K", "fastcdc/1K-2K", "fastcdc/aK-bK-cK", "x/y/z"])
def test_unknown_chunker_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        ChunkerParams.parse(name)
