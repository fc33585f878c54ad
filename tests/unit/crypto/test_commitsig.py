"""Public keys from OpenSSH lines, fingerprints and ECDSA P-256 raw signatures (crypto.commitsig)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from strongroom.crypto.commitsig import PublicKey, check_signer_name
from strongroom.errors import InputError

OPENSSH = serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH


def test_ed25519_line_fingerprint_matches_openssh() -> None:
    key = Ed25519PrivateKey.generate()
    line = key.public_key().public_bytes(*OPENSSH).decode()
    pub = PublicKey.from_openssh(line + " someone@host")
    blob = base64.b64decode(line.split()[1])
    assert pub.fingerprint == "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert pub.openssh() == line
    assert pub.verify(b"m", key.sign(b"m")) and not pub.verify(b"n", key.sign(b"m"))


def test_p256_raw_signature_over_sha256() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = PublicKey.from_openssh(key.public_key().public_bytes(*OPENSSH).decode())
    assert pub.alg == "ecdsa-p256" and len(pub.raw) == 65
    r, s = decode_dss_signature(key.sign(b"message", ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert pub.verify(b"message", raw)
    assert not pub.verify(b"other", raw) and not pub.verify(b"message", raw[:-1])


@pytest.mark.parametrize("line", ["", "garbage", "ssh-ed25519 AAAA", "ssh-ed25519 AAAA\nssh-ed25519 AAAA"])
def test_garbage_is_input_error(line: str) -> None:
    with pytest.raises(InputError):
        PublicKey.from_openssh(line)


def test_other_curves_refused() -> None:
    line = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(*OPENSSH).decode()
    with pytest.raises(InputError):
        PublicKey.from_openssh(line)


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "a b"])
def test_signer_names(name: str) -> None:
    with pytest.raises(InputError):
        check_signer_name(name)
