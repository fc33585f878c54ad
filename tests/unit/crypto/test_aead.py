"""Sealer frames: round trips, associated data binding every header field and the context, and
Wycheproof-style negative vectors (every single-byte change, every truncation must fail)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import HEADER_LEN, OVERHEAD, SUITE, Sealer, key_id_of, open_with, seal_with
from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed, IntegrityError
from tests.unit.conftest import MakeSealer

CHUNK = ObjectKind.CHUNK


def test_suite_is_self_describing() -> None:
    assert SUITE == "blake3k+aes256gcm/1"


@settings(max_examples=40)
@given(plain=st.binary(max_size=4096), kind=st.sampled_from(list(ObjectKind)), context=st.binary(max_size=64),
       flags=st.integers(0, 255))
def test_round_trip(plain: bytes, kind: int, context: bytes, flags: int) -> None:
    s = Sealer({1: Secret(b"k" * 32)}, 1)
    frame = s.seal(plain, kind, context, flags)
    assert len(frame) == len(plain) + OVERHEAD
    assert s.open_flagged(frame, kind, context) == (plain, flags)
    assert s.open(memoryview(frame), kind, context) == plain


def test_seal_accepts_a_memoryview(sealer: Sealer, ctx: bytes) -> None:
    data = bytearray(b"abc" * 100)
    frame = sealer.seal(memoryview(data)[3:], CHUNK, ctx)
    assert sealer.open(frame, CHUNK, ctx) == bytes(data[3:])


def test_ciphertext_does_not_contain_the_plaintext(sealer: Sealer, ctx: bytes) -> None:
    plain = b"secret training label " * 20
    frame = sealer.seal(plain, CHUNK, ctx)
    assert b"secret" not in frame


def test_same_plaintext_seals_differently(sealer: Sealer, ctx: bytes) -> None:
    frames = {sealer.seal(b"same", CHUNK, ctx) for _ in range(50)}
    assert len(frames) == 50


def test_nonces_are_unique_over_many_seals(sealer: Sealer, ctx: bytes) -> None:
    n = 20_000
    nonces = {sealer.seal(b"", CHUNK, ctx)[HEADER_LEN - 12 : HEADER_LEN] for _ in range(n)}
    assert len(nonces) == n
    assert sealer.sealed == {sealer.current: n}  # every frame counts against the key's nonce budget


def test_kind_is_bound(sealer: Sealer, ctx: bytes) -> None:
    frame = sealer.seal(b"tree bytes", ObjectKind.TREE, ctx)
    for other in ObjectKind:
        if other != ObjectKind.TREE:
            with pytest.raises(DecryptionFailed):
                sealer.open(frame, other, ctx)


def test_relabelled_kind_in_the_header_fails(sealer: Sealer, ctx: bytes) -> None:
    frame = bytearray(sealer.seal(b"tree bytes", ObjectKind.TREE, ctx))
    frame[1] = ObjectKind.COMMIT
    with pytest.raises(DecryptionFailed):
        sealer.open(bytes(frame), ObjectKind.COMMIT, ctx)


def test_flags_are_bound(sealer: Sealer, ctx: bytes) -> None:
    frame = bytearray(sealer.seal(b"raw payload", CHUNK, ctx, flags=0))
    frame[2] = 1  # claim zstd
    with pytest.raises(DecryptionFailed):
        sealer.open_flagged(bytes(frame), CHUNK, ctx)


def test_context_is_bound(sealer: Sealer) -> None:
    oid = os.urandom(32)
    frame = sealer.seal(b"chunk", CHUNK, oid)
    for other in (os.urandom(32), oid[:-1], oid + b"\0", b"", bytes(32)):
        with pytest.raises(DecryptionFailed):
            sealer.open(frame, CHUNK, other)


def test_key_id_is_bound(make_sealer: MakeSealer, ctx: bytes) -> None:
    # two keys in the ring: a frame relabelled to the other key id must not open
    s = make_sealer(n_keys=2, current=1)
    frame = bytearray(s.seal(b"payload", CHUNK, ctx))
    assert key_id_of(frame) == 1
    frame[3:7] = (2).to_bytes(4, "big")
    with pytest.raises(DecryptionFailed):
        s.open(bytes(frame), CHUNK, ctx)


def test_unknown_key_id_fails(make_sealer: MakeSealer, ctx: bytes) -> None:
    frame = make_sealer(n_keys=3, current=3).seal(b"x", CHUNK, ctx)
    reader = make_sealer(n_keys=2)
    with pytest.raises(DecryptionFailed):
        reader.open(frame, CHUNK, ctx)


def test_wrong_key_fails(make_sealer: MakeSealer, ctx: bytes) -> None:
    frame = make_sealer().seal(b"payload", CHUNK, ctx)
    with pytest.raises(DecryptionFailed):
        make_sealer().open(frame, CHUNK, ctx)


def test_old_keys_still_open_after_a_new_current_key(ctx: bytes) -> None:
    k1, k2 = Secret(os.urandom(32)), Secret(os.urandom(32))
    old = Sealer({1: k1}, 1).seal(b"before rotation", CHUNK, ctx)
    rotated = Sealer({1: k1, 2: k2}, 2)
    new = rotated.seal(b"after", CHUNK, ctx)
    assert key_id_of(new) == 2
    assert rotated.open(old, CHUNK, ctx) == b"before rotation"
    assert rotated.open(new, CHUNK, ctx) == b"after"


def test_current_key_must_exist() -> None:
    with pytest.raises(ValueError):
        Sealer({1: Secret(os.urandom(32))}, 2)


def test_every_truncation_fails(sealer: Sealer, ctx: bytes) -> None:
    frame = sealer.seal(b"0123456789abcdef", CHUNK, ctx)
    for n in range(len(frame)):
        with pytest.raises(IntegrityError):
            sealer.open(frame[:n], CHUNK, ctx)


def test_appended_bytes_fail(sealer: Sealer, ctx: bytes) -> None:
    frame = sealer.seal(b"0123456789abcdef", CHUNK, ctx)
    with pytest.raises(DecryptionFailed):
        sealer.open(frame + b"\0", CHUNK, ctx)


@pytest.mark.parametrize("plain", [b"", b"x", b"sixteen bytes!!!", bytes(range(256))])
def test_flipping_any_bit_of_any_byte_fails(sealer: Sealer, ctx: bytes, plain: bytes) -> None:
    """Negative vectors in the Wycheproof style: header, nonce, ciphertext and tag are all covered."""
    frame = sealer.seal(plain, CHUNK, ctx, flags=1)
    assert sealer.open(frame, CHUNK, ctx) == plain
    for pos in range(len(frame)):
        for bit in (0x01, 0x80) if len(frame) > 64 else (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80):
            bad = bytearray(frame)
            bad[pos] ^= bit
            with pytest.raises(DecryptionFailed):
                sealer.open(bytes(bad), CHUNK, ctx)


def test_frames_are_opaque_in_errors(sealer: Sealer, ctx: bytes) -> None:
    frame = bytearray(sealer.seal(b"plaintext-marker", CHUNK, ctx))
    frame[-1] ^= 1
    with pytest.raises(DecryptionFailed) as info:
        sealer.open(bytes(frame), CHUNK, ctx)
    assert "plaintext-marker" not in str(info.value)
    assert str(info.value).startswith("decryption failed")


def test_seal_with_and_open_with() -> None:
    key = Secret(os.urandom(32))
    nonce, ct = seal_with(key, b"master key bytes", b"aad")
    assert open_with(key, nonce, ct, b"aad") == b"master key bytes"
    with pytest.raises(DecryptionFailed):
        open_with(key, nonce, ct, b"other aad")
    with pytest.raises(DecryptionFailed):
        open_with(Secret(os.urandom(32)), nonce, ct, b"aad")
    bad = bytearray(ct)
    bad[0] ^= 1
    with pytest.raises(DecryptionFailed):
        open_with(key, nonce, bytes(bad), b"aad")


def test_repr_names_no_key(make_sealer: MakeSealer) -> None:
    keys = {1: Secret(os.urandom(32))}
    text = repr(make_sealer(keys=keys))
    assert keys[1].reveal().hex() not in text and "Secret" not in text
