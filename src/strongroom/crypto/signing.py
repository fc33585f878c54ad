"""Ed25519 signing for the audit log: keys, C2SP signed-note key ids, and signing/verifying checkpoints.

- ``Signer`` (protocol) and ``Ed25519Signer``: generate, or load/save as a passphrase-encrypted PKCS#8 PEM
  (cryptography's ``BestAvailableEncryption``). No repr, str or exception ever shows key material.
- ``Ed25519Verifier``: a public key with its note name; ``vkey`` / ``from_vkey`` use the C2SP verifier
  key text ``<name>+<hex key hash>+<base64(0x01 ‖ public key)>``.
- Key hash (C2SP signed-note): the first 4 bytes of SHA-256(name ‖ "\\n" ‖ 0x01 ‖ 32-byte public key).
- ``sign_note`` / ``verify_note`` and ``sign_checkpoint`` / ``verify_checkpoint`` glue these to the pure
  formats of ``strongroom.core.checkpoint``. Verification ignores signatures from unknown keys, requires at
  least one from the expected key, and rejects the note if any signature from that key is bad.

Malformed text or keys raise ``InputError``; a signature that does not verify raises ``IntegrityError``.
There is no default verifier: the caller always names the key it trusts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.core.checkpoint import Checkpoint, NoteSignature, SignedNote, check_key_name
from strongroom.crypto.secret import Secret
from strongroom.errors import InputError, IntegrityError, WrongPassphrase

ALG_ED25519 = 0x01
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"


def note_key_hash(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note key hash of an Ed25519 key: SHA-256(name ‖ "\\n" ‖ 0x01 ‖ key)[:4]."""
    check_key_name(name)
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InputError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def write_private_file(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a file readable by its owner only, atomically (temporary file, fsync, rename, fsync folder;
    without the fsyncs when not ``durable``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@runtime_checkable
class Signer(Protocol):
    """Anything that signs notes under a name: a key in memory, a file, later an HSM or KMS."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes:
        """The 4-byte C2SP key hash of (name, public key)."""
        ...

    @property
    def public_key_bytes(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class Ed25519Verifier:
    """An Ed25519 public key and the note name it signs under."""

    __slots__ = ("_key", "_key_id", "_name", "_public")

    def __init__(self, name: str, public_key_bytes: bytes) -> None:
        self._key_id = note_key_hash(name, public_key_bytes)
        self._name = name
        self._public = bytes(public_key_bytes)
        try:
            self._key = Ed25519PublicKey.from_public_bytes(self._public)
        except ValueError:
            raise InputError("not a valid Ed25519 public key") from None

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    @property
    def public_key_bytes(self) -> bytes:
        return self._public

    @property
    def vkey(self) -> str:
        """The C2SP verifier key text: ``name+hexhash+base64(0x01 ‖ key)``."""
        blob = base64.b64encode(bytes([ALG_ED25519]) + self._public).decode("ascii")
        return f"{self._name}+{self._key_id.hex()}+{blob}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Ed25519Verifier:
        name, hash_hex, blob = _split_key_text(vkey.strip(), "verifier key")
        raw = _b64(blob, "verifier key")
        if len(raw) != 1 + PUBLIC_KEY_SIZE or raw[0] != ALG_ED25519:
            raise InputError("verifier key is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hash_hex:
            raise InputError("verifier key hash does not match its name and key")
        return verifier

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise IntegrityError unless ``signature`` is this key's signature of ``message``."""
        if len(signature) != SIGNATURE_SIZE:
            raise IntegrityError(f"signature by {self._name} is malformed")
        try:
            self._key.verify(bytes(signature), bytes(message))
        except InvalidSignature:
            raise IntegrityError(f"signature by {self._name} does not verify") from None

    def __repr__(self) -> str:
        return f"Ed25519Verifier(name={self._name!r}, key_id={self._key_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519Verifier) and (self._name, self._public) == (other._name, other._public)

    def __hash__(self) -> int:
        return hash((self._name, self._public))


class Ed25519Signer:
    """An Ed25519 private key held in memory; saved only encrypted under a passphrase."""

    __slots__ = ("_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._verifier = Ed25519Verifier(name, public)
        self._key = private_key

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: Secret) -> Ed25519Signer:
        if len(seed) != 32:
            raise InputError("an Ed25519 seed is 32 bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed.reveal()))

    @classmethod
    def from_note_key(cls, skey: Secret) -> Ed25519Signer:
        """Parse a Go/C2SP signer key text ``PRIVATE+KEY+name+hexhash+base64(0x01 ‖ seed)``."""
        try:
            text = skey.reveal().decode("ascii").strip()
        except UnicodeDecodeError:
            raise InputError("malformed signer key") from None
        if not text.startswith(_PRIVATE_KEY_PREFIX):
            raise InputError("malformed signer key")
        name, hash_hex, blob = _split_key_text(text[len(_PRIVATE_KEY_PREFIX) :], "signer key")
        raw = _b64(blob, "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise InputError("signer key is not an Ed25519 key")
        signer = cls.from_seed(name, Secret(raw[1:]))
        if signer.key_id.hex() != hash_hex:
            raise InputError("signer key hash does not match its name and key")
        return signer

    @classmethod
    def from_pem(cls, name: str, pem: bytes, passphrase: Secret) -> Ed25519Signer:
        _check_passphrase(passphrase)
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase.reveal())
        except TypeError:
            raise InputError("the signing key file is not encrypted; refusing it") from None
        except ValueError:
            # Wrong passphrase and a damaged file look the same to OpenSSL; do not guess which.
            raise WrongPassphrase() from None
        except UnsupportedAlgorithm:
            raise InputError("the signing key file holds an unsupported key type") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InputError("the signing key file does not hold an Ed25519 key")
        return cls(name, key)

    def to_pem(self, passphrase: Secret) -> bytes:
        _check_passphrase(passphrase)
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.reveal()),
        )

    @classmethod
    def load(cls, name: str, path: Path, passphrase: Secret) -> Ed25519Signer:
        try:
            pem = Path(path).read_bytes()
        except OSError as e:
            raise InputError(f"cannot read signing key {path}: {e.strerror}") from None
        return cls.from_pem(name, pem, passphrase)

    def save(self, path: Path, passphrase: Secret, *, overwrite: bool = False) -> None:
        """Write the encrypted PEM with mode 0600, atomically (temporary file, fsync, rename)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise InputError(f"refusing to overwrite signing key {path}")
        write_private_file(path, self.to_pem(passphrase))

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    @property
    def public_key_bytes(self) -> bytes:
        return self._verifier.public_key_bytes

    def verifier(self) -> Ed25519Verifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(bytes(message))

    def __repr__(self) -> str:
        return f"Ed25519Signer(name={self.name!r}, key_id={self.key_id.hex()})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an Ed25519Signer is never pickled")


def _check_passphrase(passphrase: Secret) -> None:
    if not isinstance(passphrase, Secret) or len(passphrase) == 0:
        raise InputError("a signing key needs a non-empty passphrase")


def _split_key_text(text: str, what: str) -> tuple[str, str, str]:
    parts = text.split("+", 2)
    if len(parts) != 3 or len(parts[1]) != 8 or any(c not in "0123456789abcdef" for c in parts[1]):
        raise InputError(f"malformed {what}")
    check_key_name(parts[0])
    return parts[0], parts[1], parts[2]


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"malformed {what}") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InputError(f"malformed {what}")
    return raw


def sign_note(text: str, signers: Signer | list[Signer] | tuple[Signer, ...]) -> str:
    """Sign ``text`` (which must end in a newline) with one or more signers; return the signed note."""
    group = [signers] if isinstance(signers, Signer) else list(signers)
    if not group:
        raise InputError("a note needs at least one signer")
    message = text.encode("utf-8")
    sigs = tuple(NoteSignature(s.name, s.key_id, s.sign(message)) for s in group)
    return SignedNote(text, sigs).to_text()


def add_signature(note: str | bytes, signer: Signer) -> str:
    """Cosign an existing note (its text unchanged); signatures already on it are kept as they are."""
    parsed = SignedNote.parse(note)
    sig = NoteSignature(signer.name, signer.key_id, signer.sign(parsed.text.encode("utf-8")))
    return SignedNote(parsed.text, (*parsed.signatures, sig)).to_text()


def verify_note(note: str | bytes, verifier: Ed25519Verifier) -> SignedNote:
    """Parse a signed note and check it carries a good signature from ``verifier``.

    Signatures from other keys are ignored (C2SP: key rotation and cosigning); any signature that claims
    the verifier's name and key hash must verify, and at least one must be present.
    """
    parsed = SignedNote.parse(note)
    message = parsed.text.encode("utf-8")
    found = 0
    for sig in parsed.signatures:
        if sig.name == verifier.name and hmac.compare_digest(sig.key_hash, verifier.key_id):
            verifier.verify(message, sig.signature)
            found += 1
    if not found:
        raise IntegrityError(f"note is not signed by the expected key {verifier.name}+{verifier.key_id.hex()}")
    return parsed


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The checkpoint as a C2SP signed note, signed by ``signer``."""
    return sign_note(checkpoint.to_text(), signer)


def verify_checkpoint(note: str | bytes, verifier: Ed25519Verifier, *, origin: str) -> Checkpoint:
    """Verify a signed checkpoint from the log ``origin`` under ``verifier``; return the checkpoint.

    The origin is mandatory: a valid signature over another log's checkpoint is not this log's.
    """
    parsed = verify_note(note, verifier)
    checkpoint = Checkpoint.from_text(parsed.text)
    if checkpoint.origin != origin:
        raise IntegrityError(f"checkpoint is for origin {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint
