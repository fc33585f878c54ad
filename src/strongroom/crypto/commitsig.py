"""Signing keys for versions: public keys (Ed25519, ECDSA P-256), OpenSSH public key lines, fingerprints,
verification, and the signers that hold the private halves (in memory from a key file, or in a PKCS#11
token).

- ``PublicKey``: an algorithm and the raw public key (32 bytes for Ed25519, the 65-byte uncompressed SEC1
  point for P-256). ``from_openssh`` parses ``ssh-ed25519 AAAA...`` and ``ecdsa-sha2-nistp256 AAAA...``
  lines with cryptography's ``load_ssh_public_key``; ``openssh()`` writes one; ``fingerprint`` is OpenSSH's
  ``SHA256:<base64, unpadded>`` of the key blob, so ``ssh-keygen -lf`` shows the same text.
- Signatures: Ed25519 over the message; ECDSA P-256 as raw ``r ‖ s`` (64 bytes) over SHA-256(message), the
  form a token's plain ECDSA mechanism gives when it is handed the digest.
- ``FileSigner`` (an ``Ed25519Signer`` loaded from a passphrase-encrypted PKCS#8 file) and ``HsmSigner``
  (a key in a token; the PIN stays a ``Secret``). Each checks its own signature before returning it, so a
  token key that does not match the recorded public key is found at signing time, not at verify time.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from strongroom.crypto import hsm
from strongroom.crypto.hsm import HsmKeyRef
from strongroom.crypto.secret import Secret
from strongroom.crypto.signing import Ed25519Signer
from strongroom.errors import InputError, IntegrityError

ALGS = ("ed25519", "ecdsa-p256")
_SSH_TYPE = {"ed25519": "ssh-ed25519", "ecdsa-p256": "ecdsa-sha2-nistp256"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def check_signer_name(name: str) -> str:
    """A signer name is also a file name in the key folder: letters, digits, ``. _ @ -``, at most 64."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"invalid signer name {name!r}: use letters, digits, '.', '_', '@' and '-' (at most 64, "
            "starting with a letter or digit)"
        )
    return name


def check_alg(alg: str) -> str:
    if alg not in ALGS:
        raise InputError(f"unknown signing algorithm {alg!r}: ed25519 or ecdsa-p256")
    return alg


class PublicKey:
    """A signing public key; equal keys have equal fingerprints."""

    __slots__ = ("_key", "alg", "raw")

    def __init__(self, alg: str, raw: bytes) -> None:
        self.alg = check_alg(alg)
        self.raw = bytes(raw)
        try:
            if alg == "ed25519":
                self._key: Ed25519PublicKey | ec.EllipticCurvePublicKey = Ed25519PublicKey.from_public_bytes(self.raw)
            else:
                self._key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.raw)
        except ValueError:
            raise InputError(f"not a valid {alg} public key") from None

    @classmethod
    def from_openssh(cls, line: str) -> PublicKey:
        """An OpenSSH public key line (``TYPE BASE64 [comment]``) of an Ed25519 or ECDSA P-256 key."""
        text = line.strip()
        if "\n" in text or not text:
            raise InputError("expected one OpenSSH public key line (ssh-ed25519 or ecdsa-sha2-nistp256)")
        try:
            key = serialization.load_ssh_public_key(text.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            raise InputError("not an OpenSSH public key line (ssh-ed25519 or ecdsa-sha2-nistp256)") from None
        if isinstance(key, Ed25519PublicKey):
            return cls("ed25519", key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            return cls("ecdsa-p256", point)
        raise InputError("unsupported public key type: strongroom takes ssh-ed25519 and ecdsa-sha2-nistp256")

    def openssh(self, comment: str = "") -> str:
        line = self._key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        return f"{line} {comment}" if comment else line

    @property
    def fingerprint(self) -> str:
        blob = base64.b64decode(self.openssh().split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's signature of ``message``; never raises on a bad signature."""
        try:
            if isinstance(self._key, Ed25519PublicKey):
                if len(signature) != 64:
                    return False
                self._key.verify(bytes(signature), bytes(message))
            else:
                if len(signature) != 64:
                    return False
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                self._key.verify(encode_dss_signature(r, s), bytes(message), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and (self.alg, self.raw) == (other.alg, other.raw)

    def __hash__(self) -> int:
        return hash((self.alg, self.raw))

    def __repr__(self) -> str:
        return f"PublicKey({self.alg}, {self.fingerprint})"


class CommitSigner(Protocol):
    """A private signing key under a name, wherever it lives."""

    @property
    def name(self) -> str: ...

    @property
    def public(self) -> PublicKey: ...

    def sign(self, message: bytes) -> bytes: ...


class FileSigner:
    """An Ed25519 key held in memory (loaded from its passphrase-encrypted PKCS#8 file)."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519Signer) -> None:
        self._key = key
        self._public = PublicKey("ed25519", key.public_key_bytes)

    @property
    def name(self) -> str:
        return self._key.name

    @property
    def public(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return _checked(self._public, message, self._key.sign(message))

    def __repr__(self) -> str:
        return f"FileSigner(name={self.name!r}, {self._public.fingerprint})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a signer is never pickled")


class HsmSigner:
    """A key pair in a PKCS#11 token; the private half never leaves it."""

    __slots__ = ("_name", "_pin", "_public", "_ref")

    def __init__(self, name: str, ref: HsmKeyRef, public: PublicKey, pin: Secret) -> None:
        self._name = name
        self._ref = ref
        self._public = public
        self._pin = pin

    @property
    def name(self) -> str:
        return self._name

    @property
    def public(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return _checked(self._public, message, hsm.sign(self._ref, self._public.alg, self._pin, message))

    def __repr__(self) -> str:
        return f"HsmSigner(name={self._name!r}, token={self._ref.token!r}, {self._public.fingerprint})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a signer is never pickled")


def _checked(public: PublicKey, message: bytes, signature: bytes) -> bytes:
    if not public.verify(message, signature):
        raise IntegrityError("the signing key does not match its recorded public key")
    return signature
