"""Key slots: the master key wrapped by one or two KEKs. Right credentials open a slot; a wrong one is told
apart from a damaged slot; the layers' descriptions are bound to the wrapping; first-release slots
(sr-key/1) still open."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.crypto.aead import seal_with
from strongroom.crypto.kdf import KdfParams, derive_kek
from strongroom.crypto.keys import new_master_key
from strongroom.crypto.keyslot import (
    KekRequest,
    PassphraseOnly,
    encode_slot,
    make_slot,
    open_slot,
    parse_slot,
    read_keyfile,
)
from strongroom.crypto.secret import Secret
from strongroom.errors import InputError, IntegrityError, KeyUnavailable, WrongPassphrase

REPO = os.urandom(32).hex()
PASS = Secret(b"correct horse")
PARAMS = KdfParams(time_cost=1, memory_kib=64, parallelism=1)


class Creds(PassphraseOnly):
    def __init__(self, passphrase: Secret, keyfile: str | None = None) -> None:
        super().__init__(passphrase)
        self.keyfile = keyfile

    def keyfile_path(self, recorded: str) -> str:
        return self.keyfile or recorded


def _canon(body: dict[str, object]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _rechecksum(body: dict[str, object]) -> bytes:
    body.pop("checksum", None)
    body["checksum"] = hashlib.sha256(_canon(body)).hexdigest()
    return json.dumps(body).encode()


@pytest.fixture
def master() -> Secret:
    return new_master_key()


@pytest.fixture
def slot_bytes(master: Secret) -> bytes:
    return encode_slot(make_slot(REPO, master, [KekRequest("passphrase")], PassphraseOnly(PASS), PARAMS, 1))


def test_passphrase_slot_round_trip(slot_bytes: bytes, master: Secret) -> None:
    slot = parse_slot(slot_bytes)
    assert slot.kinds == ("passphrase",) and slot.repo_id == REPO
    assert open_slot(slot, REPO, PassphraseOnly(PASS)) == master


def test_slot_holds_neither_master_key_nor_passphrase(slot_bytes: bytes, master: Secret) -> None:
    for secret in (master.reveal(), PASS.reveal()):
        assert secret not in slot_bytes
        assert secret.hex().encode() not in slot_bytes
        assert base64.b64encode(secret) not in slot_bytes


def test_two_slots_for_one_key_share_nothing(master: Secret) -> None:
    a, b = (json.loads(encode_slot(make_slot(REPO, master, [KekRequest("passphrase")], PassphraseOnly(PASS),
                                                PARAMS, 1))) for _ in range(2))  # fmt: skip
    assert a["id"] != b["id"] and a["wrapped"] != b["wrapped"]
    assert a["layers"][0]["salt"] != b["layers"][0]["salt"]


@pytest.mark.parametrize("wrong", [b"correct horsE", b"correct horse ", "correct hørse".encode()])
def test_wrong_passphrase(slot_bytes: bytes, wrong: bytes) -> None:
    with pytest.raises(WrongPassphrase):
        open_slot(parse_slot(slot_bytes), REPO, PassphraseOnly(Secret(wrong)))


def test_slot_of_another_repository_is_refused(slot_bytes: bytes) -> None:
    with pytest.raises(IntegrityError):
        open_slot(parse_slot(slot_bytes), os.urandom(32).hex(), PassphraseOnly(PASS))


@pytest.mark.parametrize("field", ["wrapped", "id", "repo_id"])
def test_changed_field_is_damage(slot_bytes: bytes, field: str) -> None:
    body = json.loads(slot_bytes)
    value = body[field]
    body[field] = ("A" if value[0] != "A" else "B") + value[1:]
    with pytest.raises(IntegrityError):
        parse_slot(json.dumps(body).encode())


def test_kdf_parameters_rewritten_with_a_fresh_checksum_do_not_open(slot_bytes: bytes) -> None:
    """The checksum is unkeyed, so an attacker can recompute it; the layer description is bound to the
    wrapping as associated data, so a weakened KDF still does not open (it is not silently accepted)."""
    body = json.loads(slot_bytes)
    body["layers"][0]["kdf"]["t"] = 2
    slot = parse_slot(_rechecksum(body))
    with pytest.raises(WrongPassphrase):
        open_slot(slot, REPO, PassphraseOnly(PASS))


def test_out_of_range_kdf_is_damage(slot_bytes: bytes) -> None:
    body = json.loads(slot_bytes)
    body["layers"][0]["kdf"]["m"] = 1 << 30
    with pytest.raises(IntegrityError):
        parse_slot(_rechecksum(body))


def test_every_single_byte_change_is_caught_or_harmless(slot_bytes: bytes, master: Secret) -> None:
    for pos in range(len(slot_bytes)):
        bad = bytearray(slot_bytes)
        bad[pos] ^= 0x01
        try:
            slot = parse_slot(bytes(bad))
        except IntegrityError:
            continue
        assert open_slot(slot, REPO, PassphraseOnly(PASS)) == master


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_damage_or_a_slot(data: bytes) -> None:
    with contextlib.suppress(IntegrityError):
        parse_slot(data)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    )
)
def test_arbitrary_json_with_a_valid_checksum_is_damage_or_a_slot(value: object) -> None:  # fmt: skip
    body = value if isinstance(value, dict) else {"format": "sr-key/2", "layers": value}
    with contextlib.suppress(IntegrityError):
        parse_slot(_rechecksum(dict(body)))


def test_first_release_slot_still_opens(master: Secret) -> None:
    """sr-key/1, as the first release wrote it: one passphrase layer, its own associated data."""
    salt = os.urandom(16)
    nonce, wrapped = seal_with(derive_kek(PASS, salt, PARAMS), master.reveal(), f"sr-key/1|{REPO}|k1".encode())
    body = {"format": "sr-key/1", "id": "k1", "repo_id": REPO, "kek": "passphrase",
            "kdf": {"alg": "argon2id", "t": 1, "m": 64, "p": 1}, "salt": base64.b64encode(salt).decode(),
            "nonce": base64.b64encode(nonce).decode(), "wrapped": base64.b64encode(wrapped).decode()}  # fmt: skip
    slot = parse_slot(_rechecksum(body))
    assert slot.legacy and slot.kinds == ("passphrase",)
    assert open_slot(slot, REPO, PassphraseOnly(PASS)) == master
    with pytest.raises(WrongPassphrase):
        open_slot(slot, REPO, PassphraseOnly(Secret(b"nope")))


BAD_B64 = ["not base64!", 12345, None, "", "AAAA", base64.b64encode(b"x" * 40).decode()]


@pytest.mark.parametrize("field", ["salt", "nonce"])
@pytest.mark.parametrize("value", BAD_B64)
def test_a_first_release_slot_with_a_bad_salt_or_nonce_is_damage(field: str, value: object) -> None:
    """Checked when the slot is parsed (a damaged slot, skipped), not when it is opened (an error out of
    Argon2 or AES-GCM that stopped every command)."""
    body = {"format": "sr-key/1", "id": "k1", "repo_id": REPO, "kek": "passphrase",
            "kdf": {"alg": "argon2id", "t": 1, "m": 64, "p": 1}, "salt": base64.b64encode(b"s" * 16).decode(),
            "nonce": base64.b64encode(b"n" * 12).decode(), "wrapped": "AAAA"}  # fmt: skip
    assert parse_slot(_rechecksum(dict(body))).legacy
    body[field] = value
    with pytest.raises(IntegrityError):
        parse_slot(_rechecksum(body))


@pytest.mark.parametrize("field", ["salt", "nonce"])
@pytest.mark.parametrize("value", BAD_B64)
def test_a_layer_with_a_bad_salt_or_nonce_is_damage(slot_bytes: bytes, field: str, value: object) -> None:
    body = json.loads(slot_bytes)
    body["layers"][0][field] = value
    with pytest.raises(IntegrityError):
        parse_slot(_rechecksum(body))


# ---------------------------------------------------------------------- key files


def test_keyfile_kek_is_created_0600_and_opens(tmp_path: Path, master: Secret) -> None:
    path = str(tmp_path / "repo.key")
    slot = make_slot(REPO, master, [KekRequest.parse(f"keyfile:{path}")], PassphraseOnly(PASS), PARAMS, 1)
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = read_keyfile(path)
    assert key.reveal() not in encode_slot(slot) and base64.b64encode(key.reveal()) not in encode_slot(slot)
    # The passphrase plays no part in a key-file slot.
    assert open_slot(parse_slot(encode_slot(slot)), REPO, PassphraseOnly(Secret(b"anything"))) == master


def test_another_keyfile_is_refused_by_fingerprint(tmp_path: Path, master: Secret) -> None:
    path, other = str(tmp_path / "a.key"), str(tmp_path / "b.key")
    slot = make_slot(REPO, master, [KekRequest.parse(f"keyfile:{path}")], PassphraseOnly(PASS), PARAMS, 1)
    make_slot(REPO, master, [KekRequest.parse(f"keyfile:{other}")], PassphraseOnly(PASS), PARAMS, 1)
    with pytest.raises(KeyUnavailable, match="not the one"):
        open_slot(slot, REPO, Creds(PASS, keyfile=other))
    os.remove(path)
    with pytest.raises(KeyUnavailable, match="cannot read key file"):
        open_slot(slot, REPO, Creds(PASS))


def test_an_existing_keyfile_request_never_creates_one(tmp_path: Path, master: Secret) -> None:
    """A request with a fingerprint (change-passphrase keeping the key file that opened the slot) uses that
    key file or nothing: a missing one is not created, another key is refused."""
    path = str(tmp_path / "a.key")
    slot = make_slot(REPO, master, [KekRequest.parse(f"keyfile:{path}")], PassphraseOnly(PASS), PARAMS, 1)
    fp = str(slot.layers[0].params["fingerprint"])
    kept = make_slot(REPO, master, [KekRequest("keyfile", path=path, fingerprint=fp)], PassphraseOnly(PASS), PARAMS, 2)
    assert kept.layers[0].params == slot.layers[0].params
    assert open_slot(kept, REPO, PassphraseOnly(PASS)) == master
    other = str(tmp_path / "b.key")
    make_slot(REPO, master, [KekRequest.parse(f"keyfile:{other}")], PassphraseOnly(PASS), PARAMS, 1)
    with pytest.raises(KeyUnavailable, match="not the one"):
        make_slot(REPO, master, [KekRequest("keyfile", path=other, fingerprint=fp)], PassphraseOnly(PASS), PARAMS, 3)
    missing = str(tmp_path / "missing.key")
    with pytest.raises(KeyUnavailable, match="cannot read key file"):
        make_slot(REPO, master, [KekRequest("keyfile", path=missing, fingerprint=fp)], PassphraseOnly(PASS), PARAMS, 3)
    assert not os.path.exists(missing)


def test_keyfile_with_passphrase_needs_both(tmp_path: Path, master: Secret) -> None:
    path = str(tmp_path / "k")
    requests = [KekRequest("passphrase"), KekRequest.parse(f"keyfile:{path}")]
    slot = make_slot(REPO, master, requests, PassphraseOnly(PASS), PARAMS, 1)
    assert open_slot(slot, REPO, PassphraseOnly(PASS)) == master
    with pytest.raises(WrongPassphrase):
        open_slot(slot, REPO, PassphraseOnly(Secret(b"stolen key file, no passphrase")))
    os.remove(path)
    with pytest.raises(KeyUnavailable):
        open_slot(slot, REPO, PassphraseOnly(PASS))


def test_reordered_layers_do_not_open(tmp_path: Path, master: Secret) -> None:
    path = str(tmp_path / "k")
    requests = [KekRequest("passphrase"), KekRequest.parse(f"keyfile:{path}")]
    body = json.loads(encode_slot(make_slot(REPO, master, requests, PassphraseOnly(PASS), PARAMS, 1)))
    body["layers"].reverse()
    slot = parse_slot(_rechecksum(body))
    with pytest.raises((WrongPassphrase, KeyUnavailable)):
        open_slot(slot, REPO, PassphraseOnly(PASS))


@pytest.mark.parametrize("text", ["strongroom-keyfile/1 AAAA", "hello", ""])
def test_a_file_that_is_not_a_key_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k"
    path.write_text(text)
    with pytest.raises(InputError, match="not a strongroom key file"):
        read_keyfile(str(path))


@pytest.mark.parametrize(
    "keks,message",
    [
        ([], "at least one"),
        (["passphrase", "passphrase"], "same kind"),
        (["passphrase", "keyfile:/a", "keyfile:/b"], "at most two"),
    ],
)
def test_bad_kek_combinations(keks: list[str], message: str, master: Secret) -> None:
    with pytest.raises(InputError, match=message):
        make_slot(REPO, master, [KekRequest.parse(k) for k in keks], PassphraseOnly(PASS), PARAMS, 1)


@pytest.mark.parametrize("text", ["password", "keyfile", "keyfile:", "pkcs11:x", "hsm"])
def test_unknown_kek_names(text: str) -> None:
    with pytest.raises(InputError, match="--kek takes"):
        KekRequest.parse(text)


def test_pkcs11_kek_needs_its_three_options() -> None:
    with pytest.raises(InputError, match="--pkcs11-module, --pkcs11-token, --pkcs11-key-label"):
        KekRequest.parse("pkcs11")
