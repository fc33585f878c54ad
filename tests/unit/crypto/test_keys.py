"""Key files and the keyring: unwrap with the right passphrase, tell a damaged key file (IntegrityError)
from a wrong passphrase (WrongPassphrase), seal/open the keyring, rotate data keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer, key_id_of
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY, KdfParams
from strongroom.crypto.keys import (
    CHUNKER_SEED_BITS,
    Keyring,
    fingerprint,
    make_passphrase_keyfile,
    new_master_key,
    open_keyring,
    parse_keyfile,
    seal_keyring,
    unwrap_master,
)
from strongroom.crypto.secret import Secret
from strongroom.errors import IntegrityError, WrongPassphrase

REPO = os.urandom(32).hex()
PASS = Secret(b"correct horse")
_K32 = base64.b64encode(bytes(32)).decode()


def _ring(**changes: object) -> bytes:
    body: dict[str, object] = {"format": "sr-keyring/1", "current": 1, "data_keys": {"1": _K32}, "id_key": _K32,
                               "chunker_seed": 1}
    body.update(changes)
    return json.dumps(body).encode()


PARAMS = KdfParams(time_cost=1, memory_kib=64, parallelism=1)


@pytest.fixture
def master() -> Secret:
    return new_master_key()


@pytest.fixture
def keyfile(master: Secret) -> bytes:
    return make_passphrase_keyfile(REPO, "k1", master, PASS, PARAMS)


def test_keyfile_round_trip(keyfile: bytes, master: Secret) -> None:
    kf = parse_keyfile(keyfile)
    assert (kf.key_id, kf.repo_id, kf.params) == ("k1", REPO, PARAMS)
    assert unwrap_master(kf, REPO, PASS) == master


def test_keyfile_does_not_contain_the_master_key_or_passphrase(keyfile: bytes, master: Secret) -> None:
    assert master.reveal().hex().encode() not in keyfile
    assert PASS.reveal() not in keyfile
    assert base64.b64encode(master.reveal()) not in keyfile


def test_two_keyfiles_for_the_same_key_differ(master: Secret) -> None:
    a = make_passphrase_keyfile(REPO, "k1", master, PASS, PARAMS)
    b = make_passphrase_keyfile(REPO, "k1", master, PASS, PARAMS)
    assert json.loads(a)["salt"] != json.loads(b)["salt"]
    assert json.loads(a)["wrapped"] != json.loads(b)["wrapped"]


@pytest.mark.parametrize("wrong", [b"correct horsE", b"", b"correct horse ", "correct hørse".encode()])
def test_wrong_passphrase(keyfile: bytes, wrong: bytes) -> None:
    with pytest.raises(WrongPassphrase):
        unwrap_master(parse_keyfile(keyfile), REPO, Secret(wrong))


def test_keyfile_of_another_repository_is_refused(keyfile: bytes) -> None:
    with pytest.raises(IntegrityError):
        unwrap_master(parse_keyfile(keyfile), os.urandom(32).hex(), PASS)


@pytest.mark.parametrize("field", ["salt", "nonce", "wrapped", "id", "repo_id"])
def test_changed_field_is_damage_not_a_wrong_passphrase(keyfile: bytes, field: str) -> None:
    body = json.loads(keyfile)
    value = body[field]
    body[field] = ("A" if value[0] != "A" else "B") + value[1:]
    with pytest.raises(IntegrityError):
        parse_keyfile(json.dumps(body).encode())


@pytest.mark.parametrize("field,value", [("t", 2), ("m", 128), ("p", 2)])
def test_changed_kdf_parameters_are_damage(keyfile: bytes, field: str, value: int) -> None:
    body = json.loads(keyfile)
    body["kdf"][field] = value
    with pytest.raises(IntegrityError):
        parse_keyfile(json.dumps(body).encode())


def test_every_single_byte_change_is_caught_or_harmless(keyfile: bytes, master: Secret) -> None:
    """A flipped byte anywhere either leaves the same parsed content (whitespace, key order) or is detected as
    damage: never silently a different key, never a "wrong passphrase"."""
    for pos in range(len(keyfile)):
        bad = bytearray(keyfile)
        bad[pos] ^= 0x01
        try:
            kf = parse_keyfile(bytes(bad))
        except IntegrityError:
            continue
        assert unwrap_master(kf, REPO, PASS) == master


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", b'"x"', b"\xff", b"{}", b'{"checksum": 5}'])
def test_garbage_keyfile_is_damage(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        parse_keyfile(data)


def test_truncated_keyfile_is_damage(keyfile: bytes) -> None:
    for n in range(0, len(keyfile) - 1, 7):
        with pytest.raises(IntegrityError):
            parse_keyfile(keyfile[:n])


def test_keyfile_with_recomputed_checksum_still_needs_the_passphrase(keyfile: bytes) -> None:
    # An attacker who rewrites the body and its (unkeyed) checksum gets at most a "wrong passphrase":
    # the wrapped key stays authenticated by the passphrase-derived key.
    body = json.loads(keyfile)
    del body["checksum"]
    body["wrapped"] = body["wrapped"][::-1]
    body["checksum"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    kf = parse_keyfile(json.dumps(body).encode())
    with pytest.raises(WrongPassphrase):
        unwrap_master(kf, REPO, PASS)


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
