"""Pack files: finish → read_header_from round trip, frames at their offsets, Padmé padding, shuffling,
names that anyone can check, damaged trailers and headers."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.crypto.idhash import content_name
from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed, IntegrityError
from strongroom.store.pack import (
    COARSE_STEP,
    PackBuilder,
    header_location,
    pack_path,
    padded_length,
    padme,
    read_header_from,
)
from tests.unit.conftest import MakeSealer


def build(frames: list[tuple[int, bytes, bytes, int]]) -> PackBuilder:
    b = PackBuilder()
    for kind, oid, frame, raw in frames:
        b.add(kind, oid, frame, raw)
    return b


def sample_frames(sealer: Sealer, n: int, size: int = 100) -> list[tuple[int, bytes, bytes, int]]:
    out = []
    for i in range(n):
        oid = os.urandom(32)
        plain = os.urandom(size + i)
        out.append(
            (ObjectKind.CHUNK if i % 2 else ObjectKind.TREE, oid, sealer.seal(plain, ObjectKind.CHUNK, oid), len(plain))
        )
    return out


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 20), size=st.integers(0, 3000))
def test_round_trip(n: int, size: int) -> None:
    sealer = Sealer({1: Secret(b"\7" * 32)}, 1)
    ctx = b"\1" * 32
    frames = sample_frames(sealer, n, size)
    b = build(frames)
    assert len(b) == n and b.size == sum(len(f[2]) for f in frames)
    name, data, entries = b.finish(sealer, ctx)
    assert len(b) == 0 and b.size == 0  # the builder is ready for the next pack
    assert name == content_name(data)  # checkable by anyone holding the bytes, without a key
    assert read_header_from(data, sealer, ctx) == entries
    by_id = {oid: (kind, frame, raw) for kind, oid, frame, raw in frames}
    assert sorted(e.object_id for e in entries) == sorted(by_id)
    for e in entries:
        kind, frame, raw = by_id[e.object_id]
        assert (e.kind, e.length, e.raw_length) == (kind, len(frame), raw)
        assert data[e.offset : e.offset + e.length] == frame
    # frames are laid out back to back from offset 0
    assert sorted((e.offset, e.length) for e in entries)[0][0] == 0
    ends = sorted(e.offset + e.length for e in entries)
    starts = sorted(e.offset for e in entries)
    assert starts[1:] == ends[:-1]


def test_pack_size_is_padme_padded(sealer: Sealer, ctx: bytes) -> None:
    for n in (1, 3, 17):
        frames = sample_frames(sealer, n, 777)
        _, data, _ = build(frames).finish(sealer, ctx)
        (hlen,) = struct.unpack("<I", data[-4:])
        unpadded = sum(len(f[2]) for f in frames) + hlen + 4
        assert len(data) == padme(unpadded)
        assert len(data) >= unpadded


def test_blobs_are_shuffled(sealer: Sealer, ctx: bytes) -> None:
    frames = sample_frames(sealer, 8, 10)
    inserted = [f[1] for f in frames]
    orders = set()
    for _ in range(10):
        _, _, entries = build(frames).finish(sealer, ctx)
        orders.add(tuple(e.object_id for e in sorted(entries, key=lambda e: e.offset)))
    assert len(orders) > 1
    assert any(list(o) != inserted for o in orders)


def test_same_frames_give_different_pack_bytes(sealer: Sealer, ctx: bytes) -> None:
    frames = sample_frames(sealer, 1)
    names = {build(frames).finish(sealer, ctx)[0] for _ in range(5)}
    assert len(names) == 5  # the header's nonce (and padding) differ


def test_header_is_bound_to_the_repository(make_sealer: MakeSealer, ctx: bytes) -> None:
    s = make_sealer()
    _, data, _ = build(sample_frames(s, 3)).finish(s, ctx)
    with pytest.raises(DecryptionFailed):
        read_header_from(data, s, os.urandom(32))
    with pytest.raises(DecryptionFailed):
        read_header_from(data, make_sealer(), ctx)


def test_damaged_header_or_trailer_fails(sealer: Sealer, ctx: bytes) -> None:
    _, data, _ = build(sample_frames(sealer, 3)).finish(sealer, ctx)
    (hlen,) = struct.unpack("<I", data[-4:])
    for pos in range(len(data) - 4 - hlen, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x04
        with pytest.raises(IntegrityError):
            read_header_from(bytes(bad), sealer, ctx)
    for n in (0, 3, 4, hlen):
        with pytest.raises(IntegrityError):
            read_header_from(data[:n], sealer, ctx)


@pytest.mark.parametrize("size,trailer", [(100, b"\0\0\0\0"), (100, struct.pack("<I", 97)), (10, b"\1\0")])
def test_impossible_trailers(size: int, trailer: bytes) -> None:
    with pytest.raises(IntegrityError):
        header_location(size, trailer)


def test_header_location() -> None:
    assert header_location(1000, struct.pack("<I", 96)) == (900, 96)


def test_pack_path_fans_out() -> None:
    pid = "ab" + "0" * 62
    assert pack_path(pid) == f"data/ab/{pid}"


@settings(max_examples=300)
@given(st.integers(0, 2**40))
def test_padme_properties(n: int) -> None:
    p = padme(n)
    assert p >= n
    assert p - n <= 0.12 * n  # at most ~12 % overhead
    assert padme(p) == p  # already padded sizes stay
    assert padme(n + 1) >= p  # monotone


def test_full_pack_is_padded_to_coarse_steps_and_others_to_padme(sealer: Sealer, ctx: bytes) -> None:
    frames = sample_frames(sealer, 3, (9 << 20) // 3)
    for full in (True, False):
        _, data, _ = build(frames).finish(sealer, ctx, full=full)
        (hlen,) = struct.unpack("<I", data[-4:])
        unpadded = sum(len(f[2]) for f in frames) + hlen + 4
        if full:
            assert len(data) % COARSE_STEP == 0
            assert unpadded <= len(data) < unpadded + COARSE_STEP
        else:  # a large pack that is not full (the last of a commit: maybe one file) keeps Padmé
            assert len(data) == padme(unpadded)


@settings(max_examples=300)
@given(st.integers(0, 2**40), st.booleans())
def test_padded_length_properties(n: int, full: bool) -> None:
    p = padded_length(n, full)
    assert p >= n
    assert padded_length(n + 1, full) >= p  # monotone
    assert padded_length(p, full) == p
    if full:
        assert p - n < COARSE_STEP
    else:
        assert p == padme(n)


def test_padme_leaks_few_sizes() -> None:
    # Padmé maps the 2^20 sizes in [2^20, 2^21) to few distinct values (O(log log n) bits leak).
    outs = {padme(n) for n in range(1 << 20, (1 << 20) + (1 << 20), 97)}
    assert len(outs) <= 33  # multiples of 2^15: 32 values, plus the top of the range
    assert padme(0) == 0 and padme(1) == 1
