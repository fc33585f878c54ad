"""Ed25519 signers, verifiers, C2SP signed notes and signed checkpoints (strongroom.crypto.signing).

Known answers come from golang.org/x/mod sumdb/note (note_test.go @ 02c991387e35f9e4c0a9b7ce137717055f8d716d),
the reference implementation of the C2SP signed-note format.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.core.checkpoint import Checkpoint, SignedNote
from strongroom.crypto.secret import Secret
from strongroom.crypto.signing import (
    Ed25519Signer,
    Ed25519Verifier,
    Signer,
    add_signature,
    note_key_hash,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_note,
)
from strongroom.errors import InputError, IntegrityError, WrongPassphrase

# --- golang.org/x/mod/sumdb/note vectors -------------------------------------------------------------------
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_B64 = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_B64 = "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"

PASS = Secret(b"log key passphrase 9d2c")


@pytest.fixture
def peter() -> Ed25519Signer:
    return Ed25519Signer.from_note_key(Secret(PETER_SKEY.encode()))


def test_go_reference_key_ids_and_vkeys(peter: Ed25519Signer) -> None:
    assert peter.name == "PeterNeumann"
    assert peter.key_id.hex() == "c74f20a3"
    assert peter.verifier().vkey == PETER_VKEY
    assert Ed25519Verifier.from_vkey(PETER_VKEY) == peter.verifier()
    assert note_key_hash("PeterNeumann", peter.public_key_bytes) == bytes.fromhex("c74f20a3")
    manual = hashlib.sha256(b"PeterNeumann\n\x01" + peter.public_key_bytes).digest()[:4]
    assert manual == peter.key_id
    assert Ed25519Verifier.from_vkey(ENOCH_VKEY).key_id.hex() == "af0cfe78"


def test_go_reference_signature_is_reproduced_byte_for_byte(peter: Ed25519Signer) -> None:
    assert sign_note(TEXT, peter) == TEXT + "\n" + PETER_SIG


def test_go_reference_notes_open() -> None:
    peter_v, enoch_v = Ed25519Verifier.from_vkey(PETER_VKEY), Ed25519Verifier.from_vkey(ENOCH_VKEY)
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert verify_note(note, peter_v).text == TEXT
    assert verify_note(note, enoch_v).text == TEXT
    assert verify_note(note.encode(), peter_v).text == TEXT
    # Duplicates of a good signature, and a bad signature from a key we do not check, are fine.
    bad_enoch = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    verify_note(TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + bad_enoch, peter_v)


def test_go_reference_invalid_signature_is_integrity_error() -> None:
    peter_v = Ed25519Verifier.from_vkey(PETER_VKEY)
    raw = PETER_SIG.encode()
    spliced = (raw[:60] + b"ABCD" + raw[60:]).decode()
    with pytest.raises(IntegrityError):
        verify_note(TEXT + "\n" + spliced, peter_v)
    # A known key that signed badly rejects the note even next to a good signature from the same key.
    with pytest.raises(IntegrityError):
        verify_note(TEXT + "\n" + PETER_SIG + spliced, peter_v)


def test_go_reference_malformed_notes_are_input_errors() -> None:
    peter_v = Ed25519Verifier.from_vkey(PETER_VKEY)
    bad: list[str | bytes] = [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
        TEXT + "\n" + "— Bad Name " + PETER_B64,
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG * 101,
    ]
    for note in bad:
        with pytest.raises(InputError):
            verify_note(note, peter_v)


def test_signatures_from_other_keys_do_not_count() -> None:
    peter_v = Ed25519Verifier.from_vkey(PETER_VKEY)
    with pytest.raises(IntegrityError, match="not signed by the expected key"):
        verify_note(TEXT + "\n" + ENOCH_SIG, peter_v)
    misnamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    with pytest.raises(IntegrityError):
        verify_note(TEXT + "\n" + misnamed, peter_v)
    wrong_hash = PETER_SIG.replace("x08g", "xxxx")
    with pytest.raises(IntegrityError):
        verify_note(TEXT + "\n" + wrong_hash, peter_v)


def _manglings(text: str) -> list[str]:
    b = text.encode()
    n = len(b)
    out = [b[i:j].decode("latin-1") for i in range(n + 1) for j in range(i + 1, n + 1) if (i, j) != (0, n)]
    for i in range(len(b)):
        m = bytearray(b)
        m[i] += 1
        out.append(m.decode("latin-1"))
    return out


def test_go_reference_mangled_verifier_keys_are_refused() -> None:
    for k in [
        *_manglings(PETER_VKEY),
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # wrong length key
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
    ]:
        with pytest.raises(InputError):
            Ed25519Verifier.from_vkey(k)


def test_go_reference_mangled_signer_keys_are_refused() -> None:
    for k in _manglings(PETER_SKEY):
        with pytest.raises(InputError):
            Ed25519Signer.from_note_key(Secret(k.encode("latin-1")))


def test_generated_keys_sign_and_verify() -> None:
    signer = Ed25519Signer.generate("strongroom.example/log")
    assert isinstance(signer, Signer)
    verifier = signer.verifier()
    sig = signer.sign(b"hi")
    verifier.verify(b"hi", sig)
    with pytest.raises(IntegrityError):
        verifier.verify(b"hj", sig)
    with pytest.raises(IntegrityError):
        verifier.verify(b"hi", bytes([sig[0] ^ 1]) + sig[1:])
    with pytest.raises(IntegrityError):
        verifier.verify(b"hi", sig[:-1])
    assert Ed25519Verifier.from_vkey(verifier.vkey) == verifier
    # Same name, another key: its signature is not ours.
    other = Ed25519Signer.generate("strongroom.example/log")
    with pytest.raises(IntegrityError):
        verify_note(sign_note("x\n", other), verifier)


def test_every_byte_of_a_signed_note_matters() -> None:
    signer = Ed25519Signer.generate("strongroom.example/log")
    note = sign_note("strongroom.example/log\n3\n" + base64.b64encode(bytes(32)).decode() + "\n", signer)
    raw = note.encode()
    for i in range(len(raw)):
        for bit in (0, 5):
            mutated = bytearray(raw)
            mutated[i] ^= 1 << bit
            with pytest.raises((InputError, IntegrityError)):
                verify_note(bytes(mutated), signer.verifier())


def test_pem_round_trip_is_encrypted_and_private(tmp_path: Path) -> None:
    signer = Ed25519Signer.generate("strongroom.example/log")
    path = tmp_path / "log.key"
    signer.save(path, PASS)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = Ed25519Signer.load("strongroom.example/log", path, PASS)
    assert loaded.public_key_bytes == signer.public_key_bytes
    assert loaded.key_id == signer.key_id
    with pytest.raises(InputError):
        signer.save(path, PASS)  # never silently replaces a key
    signer.save(path, PASS, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]


def test_pem_failures(tmp_path: Path) -> None:
    signer = Ed25519Signer.generate("log")
    pem = signer.to_pem(PASS)
    with pytest.raises(WrongPassphrase):
        Ed25519Signer.from_pem("log", pem, Secret(b"not the passphrase"))
    with pytest.raises(InputError):
        signer.to_pem(Secret(b""))
    plain = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InputError):
        Ed25519Signer.from_pem("log", plain, PASS)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASS.reveal()),
    )
    with pytest.raises(InputError):
        Ed25519Signer.from_pem("log", ec_pem, PASS)
    with pytest.raises(InputError):
        Ed25519Signer.load("log", tmp_path / "missing.key", PASS)
    with pytest.raises(InputError):
        Ed25519Signer.generate("bad name")
    with pytest.raises(InputError):
        Ed25519Signer.generate("a+b")


def test_no_key_material_in_repr_str_or_pickle(peter: Ed25519Signer) -> None:
    blob = PETER_SKEY.split("+", 4)[4]
    seed = base64.b64decode(blob)[1:]
    forms = {seed.hex(), base64.b64encode(seed).decode(), blob}
    for text in (repr(peter), str(peter), repr(peter.verifier()), f"{peter}"):
        assert "PeterNeumann" in text
        assert not any(f in text for f in forms)
    with pytest.raises(TypeError):
        pickle.dumps(peter)


class _OtherSigner:
    """Any object with the protocol's shape can sign (e.g. an HSM-backed key)."""

    def __init__(self, inner: Ed25519Signer) -> None:
        self._inner = inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def key_id(self) -> bytes:
        return self._inner.key_id

    @property
    def public_key_bytes(self) -> bytes:
        return self._inner.public_key_bytes

    def sign(self, message: bytes) -> bytes:
        return self._inner.sign(message)


def test_checkpoints_sign_cosign_and_verify() -> None:
    log = Ed25519Signer.generate("strongroom.example/repo-1")
    witness = Ed25519Signer.generate("witness.example/w1")
    cp = Checkpoint("strongroom.example/repo-1", 1234, hashlib.sha256(b"root").digest(), ("time 2024-05-01T12:00:00Z",))
    note = sign_checkpoint(cp, _OtherSigner(log))
    assert note.startswith(cp.to_text() + "\n— strongroom.example/repo-1 ")
    assert verify_checkpoint(note, log.verifier(), origin=cp.origin) == cp
    cosigned = add_signature(note, witness)
    assert verify_checkpoint(cosigned, log.verifier(), origin=cp.origin) == cp
    assert verify_checkpoint(cosigned, witness.verifier(), origin=cp.origin) == cp
    assert len(SignedNote.parse(cosigned).signatures) == 2
    with pytest.raises(IntegrityError, match="origin"):
        verify_checkpoint(note, log.verifier(), origin="strongroom.example/repo-2")
    with pytest.raises(IntegrityError):
        verify_checkpoint(note.replace("\n1234\n", "\n1235\n"), log.verifier(), origin=cp.origin)
    with pytest.raises(IntegrityError):
        verify_checkpoint(note, witness.verifier(), origin=cp.origin)
    with pytest.raises(InputError):
        sign_note("no newline", log)
    with pytest.raises(InputError):
        sign_note("x\n", [])
