"""The keyring: seal/open it under the master key, rotate data keys. (Key slots: test_keyslot.py.)"""

from __future__ import annotations

import base64
import json
import os

import pytest

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer, key_id_of
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.keys import (
    CHUNKER_SEED_BITS,
    Keyring,
    fingerprint,
    new_master_key,
    open_keyring,
    seal_keyring,
)
from strongroom.crypto.secret import Secret
from strongroom.errors import IntegrityError

REPO = os.urandom(32).hex()
PASS = Secret(b"correct horse")
_K32 = base64.b64encode(bytes(32)).decode()


def _ring(**changes: object) -> bytes:
    body: dict[str, object] = {"format": "sr-keyring/1", "current": 1, "data_keys": {"1": _K32}, "id_key": _K32,
                               "chunker_seed": 1}
    body.update(changes)
    return json.dumps(body).encode()


@pytest.fixture
def master() -> Secret:
    return new_master_key()


def test_fingerprint_is_stable_and_distinct(master: Secret) -> None:
    assert fingerprint(master) == fingerprint(Secret(master.reveal()))
    assert fingerprint(master) != fingerprint(new_master_key())
    assert master.reveal().hex()[:8] not in fingerprint(master)


# ----------------------------------------------------------------------------------------------- keyring


def test_generated_keyring_fits_the_chunker() -> None:
    seeds = {Keyring.generate(0).chunker_seed for _ in range(64)}
    assert all(0 < s < 2**CHUNKER_SEED_BITS for s in seeds)
    assert len(seeds) == 64


def test_keyring_seal_open_round_trip(master: Secret) -> None:
    ring = Keyring.generate(123)
    ring.rotate(456)
    back = open_keyring(master, REPO, seal_keyring(master, REPO, ring))
    assert back.encode() == ring.encode()
    assert back.current == 2 and back.created == {1: 123, 2: 456}
    assert back.data_keys == ring.data_keys and back.id_key == ring.id_key


def test_keyring_is_bound_to_its_master_key_and_repository(master: Secret) -> None:
    sealed = seal_keyring(master, REPO, Keyring.generate(0))
    with pytest.raises(IntegrityError):
        open_keyring(new_master_key(), REPO, sealed)
    with pytest.raises(IntegrityError):
        open_keyring(master, os.urandom(32).hex(), sealed)


def test_damaged_keyring_is_an_integrity_error(master: Secret) -> None:
    sealed = seal_keyring(master, REPO, Keyring.generate(0))
    for n in (0, 11, 12, 27, 28, len(sealed) - 1):
        with pytest.raises(IntegrityError):
            open_keyring(master, REPO, sealed[:n])
    for pos in range(0, len(sealed), 5):
        bad = bytearray(sealed)
        bad[pos] ^= 0x40
        with pytest.raises(IntegrityError):
            open_keyring(master, REPO, bytes(bad))


@pytest.mark.parametrize("data", [
    b"", b"[]", b"{}", b'{"format":"sr-keyring/2"}',
    b'{"format":"sr-keyring/1","current":1,"data_keys":[],"id_key":"","chunker_seed":1}',
    b'{"format":"sr-keyring/1","current":1,"data_keys":{},"id_key":"","chunker_seed":1,"created":[]}',
    b'{"format":"sr-keyring/1","current":1,"data_keys":{"1":"!!"},"id_key":"","chunker_seed":1}',
    b'{"format":"sr-keyring/1","current":"x","data_keys":{},"id_key":"","chunker_seed":1}',
    b'{"format":"sr-keyring/1","current":1,"data_keys":{},"id_key":"","chunker_seed":1}',
    _ring(current=2),
    _ring(data_keys={"1": "QUJD"}),
    _ring(id_key=""),
])
def test_malformed_keyring_plaintext_is_an_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        Keyring.decode(data)


def test_rotate_keeps_old_keys_and_moves_current() -> None:
    ring = Keyring.generate(1)
    first = ring.data_keys[1]
    assert ring.rotate(2) == 2
    assert ring.rotate(3) == 3
    assert ring.current == 3
    assert ring.data_keys[1] == first
    assert len({k.reveal() for k in ring.data_keys.values()}) == 3
    ctx = os.urandom(32)
    old_frame = Sealer({1: first}, 1).seal(b"old", ObjectKind.CHUNK, ctx)
    s = Sealer(ring.data_keys, ring.current)
    assert s.open(old_frame, ObjectKind.CHUNK, ctx) == b"old"
    assert key_id_of(s.seal(b"new", ObjectKind.CHUNK, ctx)) == 3


def test_keyring_repr_shows_no_key() -> None:
    ring = Keyring.generate(0)
    text = repr(ring)
    for k in [*ring.data_keys.values(), ring.id_key]:
        assert k.reveal().hex() not in text
    assert str(ring.chunker_seed) not in text


def test_unsafe_test_params_are_what_the_fixture_uses() -> None:
    assert UNSAFE_TEST_ONLY.is_weak()


def test_well_formed_keyring_plaintext_decodes() -> None:
    assert Keyring.decode(_ring()).current == 1
    ring = Keyring.generate(7)
    assert Keyring.decode(ring.encode()).encode() == ring.encode()
