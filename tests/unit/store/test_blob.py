"""Blob codec: raw and zstd round trips; compression only where it helps; frames bound to kind and id."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import OVERHEAD, Sealer
from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed, IntegrityError
from strongroom.store.blob import PROBE_FROM, RAW, ZSTD, BlobCodec

CHUNK = ObjectKind.CHUNK


def flags_of(frame: bytes) -> int:
    return frame[2]


@settings(max_examples=40, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=5000), st.binary(max_size=50).map(lambda b: b * 100)),
    level=st.sampled_from([0, 1, 3, 19]),
)
def test_round_trip(data: bytes, level: int) -> None:
    codec = BlobCodec(Sealer({1: Secret(b"\1" * 32)}, 1), level)
    oid = b"\2" * 32
    frame = codec.encode(data, CHUNK, oid)
    assert codec.decode(frame, CHUNK, oid) == data
    assert codec.decode(memoryview(frame), CHUNK, oid) == data
    assert len(frame) <= len(data) + OVERHEAD  # compression never makes a frame bigger than raw


def test_compressible_data_is_compressed(sealer: Sealer) -> None:
    data = b"label,0.5,cat\n" * 5000
    frame = BlobCodec(sealer, 3).encode(data, CHUNK, b"i" * 32)
    assert flags_of(frame) == ZSTD
    assert len(frame) < len(data) // 10


def test_incompressible_data_is_stored_raw(sealer: Sealer) -> None:
    data = os.urandom(100_000)
    frame = BlobCodec(sealer, 3).encode(data, CHUNK, b"i" * 32)
    assert flags_of(frame) == RAW
    assert len(frame) == len(data) + OVERHEAD


def test_level_zero_never_compresses(sealer: Sealer) -> None:
    frame = BlobCodec(sealer, 0).encode(b"a" * 100_000, CHUNK, b"i" * 32)
    assert flags_of(frame) == RAW


def test_tiny_blobs_are_raw(sealer: Sealer) -> None:
    assert flags_of(BlobCodec(sealer, 3).encode(b"a" * 64, CHUNK, b"i" * 32)) == RAW


def test_frame_bound_to_object_id_and_kind(sealer: Sealer) -> None:
    codec = BlobCodec(sealer, 3)
    frame = codec.encode(b"x" * 1000, CHUNK, b"a" * 32)
    with pytest.raises(DecryptionFailed):
        codec.decode(frame, CHUNK, b"b" * 32)
    with pytest.raises(DecryptionFailed):
        codec.decode(frame, ObjectKind.TREE, b"a" * 32)


def test_unknown_encoding_flag_is_refused(sealer: Sealer) -> None:
    frame = sealer.seal(b"payload", CHUNK, b"a" * 32, flags=7)
    with pytest.raises(IntegrityError, match="unknown payload encoding"):
        BlobCodec(sealer, 3).decode(frame, CHUNK, b"a" * 32)


def test_corrupt_compressed_payload_is_an_integrity_error(sealer: Sealer) -> None:
    frame = sealer.seal(b"definitely not zstd", CHUNK, b"a" * 32, flags=ZSTD)
    with pytest.raises(IntegrityError, match="corrupt"):
        BlobCodec(sealer, 3).decode(frame, CHUNK, b"a" * 32)


def test_large_objects_are_probed_before_compressing(sealer: Sealer) -> None:
    codec = BlobCodec(sealer, 1)
    # decided by the three 8 KiB samples (start, middle, end) alone: noise there, zeros between, is sealed raw
    n = PROBE_FROM * 2
    probed = bytearray(n)
    for at in (0, n // 2, n - 8192):
        probed[at : at + 8192] = os.urandom(8192)
    assert flags_of(codec.encode(bytes(probed), CHUNK, b"p" * 32)) == RAW
    assert flags_of(codec.encode(bytes(probed[: PROBE_FROM - 1]), CHUNK, b"p" * 32)) == ZSTD  # below: all of it
    noise = os.urandom(PROBE_FROM * 4)
    text = b"id,label,score\n1,cat,0.25\n2,dog,0.75\n" * (PROBE_FROM // 8)
    assert flags_of(codec.encode(noise, CHUNK, b"i" * 32)) == RAW
    assert flags_of(codec.encode(text, CHUNK, b"i" * 32)) == ZSTD
    # compressible where the samples are taken: compressed, and still read back byte for byte
    mixed = text[:PROBE_FROM] + noise + text[:PROBE_FROM]
    frame = codec.encode(mixed, CHUNK, b"m" * 32)
    assert flags_of(frame) == ZSTD
    assert codec.decode(frame, CHUNK, b"m" * 32) == mixed


@settings(max_examples=25, deadline=None)
@given(parts=st.lists(st.tuples(st.booleans(), st.integers(1, 96 << 10)), min_size=1, max_size=6))
def test_round_trip_around_the_probe_size(parts: list[tuple[bool, int]]) -> None:
    codec = BlobCodec(Sealer({1: Secret(b"\1" * 32)}, 1), 1)
    data = b"".join(os.urandom(n) if noisy else (b"row,%d\n" % n) * (n // 8 + 1) for noisy, n in parts)
    frame = codec.encode(data, CHUNK, b"\2" * 32)
    assert codec.decode(frame, CHUNK, b"\2" * 32) == data
    assert len(frame) <= len(data) + OVERHEAD
